"""The targets a mini generator has to meet to be a fair analogue of Stable Diffusion.

Fixed before any downstream (PTQ / QAT) number of a new generator was looked at, and quoted in the model
card. Stable Diffusion's VAE is close to lossless at its resolution and its images are sharp: its gap to
ImageNet is style and framing, not blur. So the VAE must round-trip public images nearly losslessly and keep
their fine detail, the generated images must hold real images' fine detail and be the prompted class, and the
generator must stay cheap enough for the mini world (2 CPU cores).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One target: ``value`` must be ``>= bound`` (``kind="min"``), ``<= bound`` (``"max"``) or, for a ratio to
    real images, within ``bound`` of 1 (``"ratio"``)."""

    key: str
    what: str
    kind: str
    bound: float

    def met(self, value: float | None) -> bool | None:
        """Whether ``value`` meets the target (None when it was not measured)."""
        if value is None:
            return None
        if self.kind == "min":
            return value >= self.bound
        if self.kind == "max":
            return value <= self.bound
        return abs(value - 1) <= self.bound

    def describe(self) -> str:
        """The target as text: "≥ 30", "≤ 180", "within 10% of real"."""
        if self.kind == "ratio":
            return f"within {100 * self.bound:.0f}% of real"
        return f"{'≥' if self.kind == 'min' else '≤'} {self.bound:g}"


TARGETS: tuple[Target, ...] = (
    Target("vae_psnr_db", "VAE round trip PSNR, held-back public images (dB)", "min", 30.0),
    Target("round_trip_hf_ratio", "VAE round trip high-frequency share / real's", "ratio", 0.10),
    Target("class_fidelity", "class fidelity of unfiltered label-prompt images (%)", "min", 90.0),
    Target("generated_hf_ratio", "generated high-frequency share / real's", "ratio", 0.15),
    Target("images_per_s", "synthesis at the mini defaults on 2 cores (images/s)", "min", 20.0),
    Target("train_minutes", "training cost, VAE and UNet stages (CPU minutes)", "max", 180.0),
)


def measured_values(diagnostics: dict | None, speed: dict | None, training: dict | None) -> dict:
    """Each target's value from the generator bench record, the generation bench record and the training
    record (None where a record or field is missing)."""
    values: dict[str, float | None] = {t.key: None for t in TARGETS}
    if diagnostics:
        values["vae_psnr_db"] = diagnostics["vae"]["psnr_db"]
        values["round_trip_hf_ratio"] = diagnostics["ratios_to_real"]["round_trip_hf_share"]
        values["class_fidelity"] = 100 * diagnostics["generated"]["class_fidelity"]
        values["generated_hf_ratio"] = diagnostics["ratios_to_real"]["generated_hf_share"]
    if speed:
        values["images_per_s"] = speed["images_per_s"]
    if (
        training and "vae_cpu_seconds" in training
    ):  # CPU time: wall time on a shared machine counts others' jobs
        values["train_minutes"] = (training["vae_cpu_seconds"] + training["unet_cpu_seconds"]) / 60
    return values
