"""The parts of bench/rd.py: images, our codec, the classic codecs, curves and BD-rates, tables."""
