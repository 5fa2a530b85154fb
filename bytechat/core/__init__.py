"""What every part stands on: params.yaml's config, paths, devices, seeds, atomic writes."""
