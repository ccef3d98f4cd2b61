from examples.torchvision_shim import declare_torchvision_ops

declare_torchvision_ops()  # before anything here imports transformers or timm (examples/torchvision_shim.py says why)
