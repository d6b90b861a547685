"""The ISSL paper's TinyImageNet experiments (Table 1, Fig. 7a, Fig. 7c): their definitions, a
runner that pretrains and probes every cell x seed through the plugin launcher, and the report
(``tools/experiments.py`` is the command line)."""
