"""The dense CRF's settings: one set of defaults for every place that runs it.

The defaults are pydensecrf's (``addPairwiseGaussian(sxy=3, compat=3)``, ``addPairwiseBilateral(sxy=80,
srgb=13, compat=10)``, 5 mean-field iterations). DeepLab v2's published PASCAL VOC setting is
``DEEPLAB_VOC``; the deeplabv1 and deeplabv2 recipes carry it in their ``crf`` section, and every saved
run's card keeps the settings it was trained with, so ``eval --crf`` and ``predict --crf`` repeat them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from pixelwise.options import check_fields


@dataclass(frozen=True)
class CRFSettings:
    """Keywords of ``pixelwise.crf.dense_crf``, with pydensecrf's meaning and defaults.

    ``gaussian_*``: the smoothness kernel over positions (std in pixels, Potts weight); ``bilateral_*``:
    the appearance kernel over positions and colours (std in pixels and in 0..255 intensity units).
    """

    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.iterations < 0:
            raise ValueError(f"crf iterations must be >= 0, got {self.iterations}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise ValueError(f"crf {name} must be positive, got {getattr(self, name)}")

    def as_keywords(self) -> dict[str, Any]:
        """The settings as ``dense_crf`` keyword arguments."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, where: str = "crf") -> CRFSettings:
        """Settings from a mapping of field names (missing ones keep their defaults); ``where`` names it in errors."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be a mapping of CRF settings, got {raw!r}")
        valid = [field.name for field in fields(cls)]
        unknown = sorted(set(raw) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**raw)


# DeepLab v2 (Chen et al., TPAMI 2017, section 4.1) on PASCAL VOC: w1 = 4, theta_alpha = 49, theta_beta = 5,
# w2 = 3, theta_gamma = 3, 10 mean-field iterations.
DEEPLAB_VOC = CRFSettings(iterations=10, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=49.0,
                          bilateral_srgb=5.0, bilateral_compat=4.0)
