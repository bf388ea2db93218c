"""Reference baselines trained from scratch: InceptionTime, xresnet1d101 and a PatchTST-style
transformer (each module registers its family in `ecgscale.models.registry`)."""
