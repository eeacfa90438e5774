"""Data-scarce GenQ's style token per profile: learned once from ``k`` real shots per class with the profile's
inversion settings (cached under ``work_dir/tokens``, the file named by the hash of what it depends on), and
the style-prompt set generated with it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genqlib.datasets import class_names, few_shots, run_classes
from genqlib.generate import generate, load_pipeline
from genqlib.infra.result_cache import entry_path, make_key
from genqlib.infra.workers import in_worker, run_all
from genqlib.inversion import INIT_WORD, StyleToken, learn_style_token
from genqlib.paper.profiles import FILTER_DROPS, Profile, get_profile
from genqlib.paper.settings import as_dict
from genqlib.paper.synthetic_pool import pool_per_class, set_folder


def token_settings(profile: str | Profile, **overrides: object) -> dict:
    """The profile's inversion settings (steps, lr, batch_size) with the non-None ``overrides`` applied."""
    settings = as_dict(get_profile(profile).token_inversion)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def token_path(
    profile: str | Profile, k_shots: int, settings: dict, init_word: str, work_dir: str | Path | None = None
) -> Path:
    """Where the token learned from ``k_shots`` per class with ``settings`` and ``init_word`` is cached."""
    p = get_profile(profile)
    key = make_key({**settings, "k_shots": k_shots, "init_word": init_word, "seed": p.seed})
    return entry_path(Path(work_dir or p.work_dir) / "tokens", f"{p.name}-k{k_shots}", key, ".safetensors")


def learn_profile_token(
    profile: str | Profile,
    k_shots: int,
    work_dir: str | Path | None = None,
    pipe=None,
    init_word: str = INIT_WORD,
    **overrides: object,
) -> StyleToken:
    """The style token learned from ``k_shots`` private-set images per class (``datasets.few_shots``) with the
    profile's settings (``overrides``: steps, lr, batch_size); reused from its file when already learned.
    ``pipe`` (default: the profile's generator, loaded fresh) holds the token afterwards."""
    p = get_profile(profile)
    settings = token_settings(p, **overrides)
    return learn_style_token(
        pipe if pipe is not None else load_pipeline(p.generator),
        few_shots(p, k_shots, seed=p.seed),
        init_word=init_word,
        seed=p.seed,
        out=token_path(p, k_shots, settings, init_word, work_dir),
        class_names=class_names(p),
        progress=not in_worker(),
        **settings,
    )


def style_per_class(profile: str | Profile, n: int) -> int:
    """Style images per class from which GenQ's default filter leaves ``n`` balanced calibration images."""
    return pool_per_class(n, FILTER_DROPS, len(run_classes(get_profile(profile))))


def _token_and_set(profile: Profile, k_shots: int, per_class: int, work_dir: str | Path | None) -> None:
    """Learn one style token (or reuse its file) and generate its style set (a worker's call)."""
    pipe = load_pipeline(profile.generator)
    token = learn_profile_token(profile, k_shots, work_dir, pipe)
    generate_style_set(profile, token.path, per_class, work_dir, pipe)


def learn_profile_tokens(
    profile: str | Profile,
    shots: Sequence[int],
    n: int,
    work_dir: str | Path | None = None,
    jobs: int | None = None,
) -> None:
    """The style tokens of several shot counts with the profile's settings, each with the style set that
    ``n`` calibration images are filtered from (``style_per_class``), made where the token is not cached yet: in one-thread worker processes
    (``genqlib.infra.workers.run_all``), as the BN-inversion sets are, so two tokens learn at once and a token does not
    depend on the caller's thread count (a single missing token learns here, at this process's threads).
    ``calibration_set(..., "genq_style", k_shots=k)`` then reads them."""
    p = get_profile(profile)
    settings = token_settings(p)
    missing = [
        (p, k, style_per_class(p, n), work_dir)
        for k in shots
        if not token_path(p, k, settings, INIT_WORD, work_dir).exists()
    ]
    run_all(_token_and_set, missing, jobs, desc="style tokens")


def generate_style_set(
    profile: str | Profile,
    token_file: str | Path,
    per_class: int,
    work_dir: str | Path | None = None,
    pipe=None,
):
    """The style-prompt set made with ``token_file``, ``per_class`` images per class (what the caller's filter
    needs, not the label set's ``n_per_class``: a style set feeds one calibration set), with the label set's
    guidance, steps, seed and batch size, in a folder named after the token file (generated, resumed or grown;
    a token learned again replaces the folder's images)."""
    p = get_profile(profile)
    tag = Path(token_file).stem.removeprefix(p.name + "-")
    folder = set_folder(p, f"style-{tag}", work_dir)
    return generate(
        pipe if pipe is not None else load_pipeline(p.generator),
        list(run_classes(p)),
        per_class,
        out=folder,
        class_names=class_names(p),
        prompts="style",
        token_file=token_file,
        **p.sampling.kwargs(),
        overwrite=True,
        progress=not in_worker(),
    )
