"""Stand-in for EDM's training/networks.py (see ../README.md): EDMPrecond around a tiny network."""

import torch
from torch_utils import persistence


@persistence.persistent_class
class TinyNet(torch.nn.Module):
    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, model_channels=8):
        super().__init__()
        self.conv_in = torch.nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.map_noise = torch.nn.Linear(1, model_channels)
        self.map_label = torch.nn.Linear(label_dim, model_channels) if label_dim else None
        self.conv_out = torch.nn.Conv2d(model_channels, out_channels, 3, padding=1)

    def forward(self, x, noise_labels, class_labels):
        emb = self.map_noise(noise_labels.reshape(-1, 1))
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels)
        return self.conv_out(torch.nn.functional.silu(self.conv_in(x) + emb[:, :, None, None]))


@persistence.persistent_class
class EDMPrecond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0,
                 sigma_max=float("inf"), sigma_data=0.5, model_type="TinyNet", **model_kwargs):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.use_fp16, self.sigma_min, self.sigma_max, self.sigma_data = use_fp16, sigma_min, sigma_max, sigma_data
        self.model = globals()[model_type](img_resolution=img_resolution, in_channels=img_channels,
                                           out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros([1, self.label_dim], device=x.device)
        else:
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model(c_in * x, c_noise.flatten(), class_labels=class_labels)
        return c_skip * x + c_out * F_x.to(torch.float32)
