"""Network architectures in plain PyTorch/torchvision (no VISSL import): the ResNet trunks as the
plugin builds them, the ISSL dimension resizer, and the packed output formats that the heads hand
to the losses."""
