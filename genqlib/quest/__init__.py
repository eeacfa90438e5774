"""Generator quantization: a low-bit UNet (and optionally text encoder) that still makes the calibration data.

Seed paper 004, QuEST (Wang et al. 2024, "Low-bit Diffusion Model Quantization via Efficient Selective
Finetuning"), in the workbench. Everything here is data-free: the only data are the FP pipeline's own sampling
trajectories for class prompts. Two ways to quantize the UNet at W8A8, W4A8 or W4A4:

- ``method="ptq"`` (the baseline): quantize, then calibrate every activation step size on the trajectory
  rows (``ptq_recon="brecq"`` adds a short block reconstruction);
- ``method="quest"``: the same start, then QuEST's time-aware activation quantizer and its selective,
  progressive finetuning of the time-embedding, then the attention layers, supervised by the FP UNet.

One concept per module:

- ``config``: ``GenQuantConfig``, the settings and their defaults;
- ``trajectories``: the calibration rows (UNet inputs along the FP pipeline's trajectories);
- ``timeaware``: the time-aware activation quantizer (step sizes per timestep group) and its calibration;
- ``finetune``: the selective finetuning of the time-embedding and attention layers;
- ``generator``: the quantized UNet and text encoder, the quantized pipeline, its size and its build cache;
- ``compare``: notebook 06's FP / PTQ / QuEST comparison (``generator_quant``) and its per-profile settings;
- ``__main__``: ``python -m genqlib.quest``, the comparison from the command line.

Settings the paper summary leaves open, genqlib's choices and why (each module repeats the ones it uses):

- **Timestep groups** (``n_groups=4``): equal quarters of the training timestep range [0, 1000), so the same
  quantizer serves 4- or 50-step sampling; four groups give each group ~1/4 of the calibration rows (>= 256 at
  the mini size) for its Lp search, and the mini UNet's activation ranges change most between early (noisy)
  and late steps.
- **Iterations** (``iters_time``, ``iters_attn``): 200 + 200 at mini (a few minutes on one CPU thread), the
  stages one after the other, each from the previous one's result (progressive).
- **Optimiser and loss**: Adam, lr 1e-4, cosine decay per stage, batches of 32 rows of one timestep group; task
  loss plus relative layer alignment, weight 1.0 (``genqlib.quest.finetune`` says why).
- **Activation step sizes** are calibrated per group before finetuning and kept fixed during it: QuEST makes
  the weights robust to the activation quantizers, it does not retune them.
- **Calibration trajectories**: ``calib_per_class`` label prompts per class with the profile's scheduler,
  steps and guidance (3.5), seeds disjoint from the evaluated images'; ``calib_rows`` rows kept at random.
- **Edges**: ``QuantConfig``'s default: the first layer that runs and the last at 8 bits, the UNet's inputs
  and output FP.

The quantized generator keeps the diffusers interface: ``quantized_pipeline`` returns a StableDiffusionPipeline
whose ``unet`` is the quantized UNet2DConditionModel (quantizers attached by parametrization and hooks), whose
id (``generate.pipeline_id``) differs from the FP generator's, and ``generate()`` writes its quantization
config into the set's key. Numbers are simulated ("fake") quantization in float32: sampling times measure the
cost of simulating quantization on the CPU, not the speed of a real low-bit generator.
"""

from genqlib.quest.compare import COLUMNS, bench_record, generator_quant, gq_settings
from genqlib.quest.config import METHODS, WIDTHS, GenQuantConfig
from genqlib.quest.finetune import (
    LR_ACT,
    LR_WEIGHT,
    STAGES,
    ff_layers,
    ff_schedule,
    finetune,
    run_stage,
    stage_acts,
    time_layers,
    time_schedule,
)
from genqlib.quest.generator import (
    QuantGenerator,
    build_generator,
    calibrated_unet,
    model_bits,
    quantize_text_encoder,
    quantize_unet,
    quantized_pipeline,
    quest_unet,
)
from genqlib.quest.sites import QuantAttnProcessor, attach_acts, init_acts
from genqlib.quest.timeaware import TimeAwareQuantizer, TimeClock, percentile_grid
from genqlib.quest.trajectories import record_unet_inputs, trajectory_inputs

__all__ = [
    "COLUMNS",
    "LR_ACT",
    "LR_WEIGHT",
    "METHODS",
    "STAGES",
    "WIDTHS",
    "GenQuantConfig",
    "QuantAttnProcessor",
    "QuantGenerator",
    "TimeAwareQuantizer",
    "TimeClock",
    "attach_acts",
    "bench_record",
    "build_generator",
    "calibrated_unet",
    "ff_layers",
    "ff_schedule",
    "finetune",
    "generator_quant",
    "gq_settings",
    "init_acts",
    "model_bits",
    "percentile_grid",
    "quantize_text_encoder",
    "quantize_unet",
    "quantized_pipeline",
    "quest_unet",
    "record_unet_inputs",
    "run_stage",
    "stage_acts",
    "time_layers",
    "time_schedule",
    "trajectory_inputs",
]
