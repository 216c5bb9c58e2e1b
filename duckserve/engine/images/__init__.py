"""Container images: the base image, reproducible layers, the image build, OCI registries and
image repositories."""
