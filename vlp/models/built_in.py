"""The `model.type`s vlp builds itself, in a module without torch so that loading a recipe can check them cheaply.
One builder serves all: open_clip's config itself says whether the text tower is HF's, the image trunk timm's and
whether a caption decoder follows (coca)."""
BUILT_IN = ("coca", "hf", "open_clip", "timm")
