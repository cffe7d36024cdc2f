"""The embedded "shapes" dataset: procedurally rendered scenes with exact captions.

``scene`` samples scene attributes, ``render`` draws them, ``captions`` describes them in words
(and parses such words back), ``generate`` writes the WebDataset shards.
"""
