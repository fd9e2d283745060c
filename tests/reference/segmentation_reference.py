#!/usr/bin/env python3
"""Reference for the dilated backbone of the semantic segmentation protocol.

Usage:
  segmentation_reference.py layer4 IN.safetensors ARCH OUT.safetensors
      IN holds a torchvision ARCH (resnet18 | resnet50) state dict under `encoder_q.` (its fc
      ignored) and `image` (N×3×H×W); writes `features`: layer4's output of the network in
      evaluation mode, dilated as the segmentation code of the paper does it (every 3×3
      convolution of layer4 with dilation 2 and padding 2 and stride 1, every stride-2
      convolution of layer4 at stride 1), and `torchvision`: the same through torchvision's own
      `replace_stride_with_dilation=[False, False, True]` where torchvision can build it
      (ResNet-50 only: its BasicBlock refuses dilation; there the first block's 3×3 keeps
      dilation 1), for comparison.
  segmentation_reference.py head IN.safetensors OUT.safetensors
      The fine-tuning head of the paper's segmentation code as a torch.nn.Sequential:
      Conv3×3(F→256, dilation d, padding d, no bias), BatchNorm2d, ReLU, Conv3×3(256→256, d),
      BatchNorm2d, ReLU, Conv1×1(256→C, no bias), then F.interpolate(bilinear,
      align_corners=False). IN holds its state dict under `head.` (`head.0.weight`, …),
      `features` (N×F×h×w), `probe` (N×C×H×W), `dilation` and `size` (H, W) as int64. Writes
      `train` (the logits in training mode), `grad.<name>` (the gradients of Σ train·probe),
      `<name>` of the running statistics after that pass, and `eval` (the logits in
      evaluation mode afterwards).
"""
import sys


def load(src, arch, **kwargs):
    import torchvision
    from safetensors.torch import load_file

    tensors = load_file(src)
    net = getattr(torchvision.models, arch)(**kwargs)
    state = {k[len("encoder_q."):]: v for k, v in tensors.items()
             if k.startswith("encoder_q.") and not k.startswith("encoder_q.fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("fc.") for k in missing), (missing, unexpected)
    return net.eval(), tensors["image"]


def dilate_layer4(net):
    import torch

    for m in net.layer4.modules():
        if isinstance(m, torch.nn.Conv2d):
            if m.kernel_size == (3, 3):
                m.dilation, m.padding = (2, 2), (2, 2)
            m.stride = (1, 1)
    return net


def trunk(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def cmd_layer4(src, arch, dst):
    import torch
    from safetensors.torch import save_file

    net, image = load(src, arch)
    out = {}
    with torch.no_grad():
        out["features"] = trunk(dilate_layer4(net), image).contiguous()
        if arch == "resnet50":
            tv, _ = load(src, arch, replace_stride_with_dilation=[False, False, True])
            out["torchvision"] = trunk(tv, image).contiguous()
    save_file(out, dst)


def cmd_head(src, dst):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file

    d = load_file(src)
    dil = int(d["dilation"].item())
    height, width = (int(v) for v in d["size"].tolist())
    state = {k[len("head."):]: v for k, v in d.items() if k.startswith("head.")}
    features = d["features"]
    classes = state["6.weight"].shape[0]
    head = torch.nn.Sequential(
        torch.nn.Conv2d(features.shape[1], 256, 3, padding=dil, dilation=dil, bias=False),
        torch.nn.BatchNorm2d(256),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(256, 256, 3, padding=dil, dilation=dil, bias=False),
        torch.nn.BatchNorm2d(256),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(256, classes, 1, bias=False),
    )
    missing, unexpected = head.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)

    def forward(x):
        return F.interpolate(head(x), size=(height, width), mode="bilinear", align_corners=False)

    out = {}
    head.train()
    logits = forward(features)
    (logits * d["probe"]).sum().backward()
    out["train"] = logits.detach().contiguous()
    for name, p in head.named_parameters():
        out["grad." + name] = p.grad.contiguous()
    for name, b in head.named_buffers():
        if not name.endswith("num_batches_tracked"):
            out[name] = b.contiguous()
    head.eval()
    with torch.no_grad():
        out["eval"] = forward(features).contiguous()
    save_file(out, dst)


def main():
    commands = {"layer4": cmd_layer4, "head": cmd_head}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
