"""Reads every barcode in the image files given and prints one line per barcode:
FILE<TAB>FORMAT<TAB>SYMBOLOGY_ID<TAB>HEX_BYTES<TAB>TEXT. Used by the label crate's tests."""
import sys

import zxingcpp
from PIL import Image

for path in sys.argv[1:]:
    for barcode in zxingcpp.read_barcodes(Image.open(path)):
        text = barcode.text.replace("\t", " ").replace("\n", " ")
        print(f"{path}\t{barcode.format}\t{barcode.symbology_identifier}\t{bytes(barcode.bytes).hex()}\t{text}")
