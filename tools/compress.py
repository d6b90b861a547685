"""Entropy-code images with a compressor checkpoint, read them back, and report rates against
JPEG/PNG/WebP: ``python tools/compress.py {encode,decode,report,plot} --help``
(:mod:`vissl_issl.compression.tool`)."""

from vissl_issl.compression.tool import main

if __name__ == "__main__":
    main()
