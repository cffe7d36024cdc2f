"""Shard I/O and DataModules: WebDataset reading and atomic writing, decoding with named skips, the
image+embedding join, embedding shards and their stats, the shapes generator, and the COCO/folder importers."""
