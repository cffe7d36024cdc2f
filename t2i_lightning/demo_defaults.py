"""The demo's CLIP and the directory `make embed` writes its embeddings to: the one place the
Python defaults of every stage and command take them from (the Makefile's ``CLIP_MODEL`` and the
``stages/*.yaml`` name the same; a test checks they agree)."""

DEMO_CLIP = "shapes-cnn-tiny"
DEMO_EMBEDDINGS = f"data/shapes/emb-{DEMO_CLIP}"
