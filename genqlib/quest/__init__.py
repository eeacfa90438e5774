"""Generator quantization: a low-bit UNet (and optionally text encoder) that still makes the calibration data.

Seed paper 004, QuEST (Wang et al. 2024, "Low-bit Diffusion Model Quantization via Efficient Selective
Finetuning"), in the workbench, as its reference code hatchetProject/QuEST runs Stable Diffusion
(``txt2img.py``, ``qdiff/post_layer_recon_sd.py``, ``qdiff/quant_layer.py``, ``qdiff/quant_block.py``).
Everything is data-free: the only data are the FP pipeline's own sampling trajectories for class prompts
(the reference's calibration set is the same kind: the FP model's sampling trajectories). Two ways to quantize
the UNet at W8A8, W4A8 or W4A4:

- ``method="ptq"`` (the baseline): ``genqlib.quant``'s quantizers, nearest rounding, every activation step
  size from the Lp search on the trajectory rows (``ptq_recon="brecq"`` adds a short block reconstruction);
- ``method="quest"``: AdaRound block reconstruction of the weights with FP activations; time-aware asymmetric
  activation quantizers (one grid per sampler timestep; per channel at 4 bits) on every layer input and on
  the attention matmul inputs (q, k, softmax output, v); then the selective, progressive finetuning: stage 1
  the ResBlocks' time-embedding projections (``time_emb_proj`` = LDM's ``emb_layers``), stage 2 the
  transformer blocks' feed-forward (``ff.net``), each learning its weights (lr 1e-5) and the step size of
  each timestep (lr 1e-5, then 1e-4), supervised by the FP UNet.

One concept per module:

- ``config``: ``GenQuantConfig``, the settings and their defaults, and ``DEVIATIONS`` from the reference;
- ``trajectories``: the calibration rows (UNet inputs along the FP pipeline's trajectories);
- ``timeaware``: the time-aware activation quantizer (one grid per timestep) and its initialisation search;
- ``sites``: where quest quantizes activations (layer inputs, attention matmuls) and their initialisation;
- ``finetune``: the two finetuning stages;
- ``generator``: the quantized UNet and text encoder, the quantized pipeline, its size and its build cache;
- notebook 06's FP / PTQ / QuEST comparison lives in the paper layer (``genqlib.paper.generator_quant``, also
  ``python -m genqlib.paper.generator_quant``), which builds on this package.

Deviations from the reference, each named where it is made and listed in ``config.DEVIATIONS`` (the
comparison's record carries the list): for cost, fewer AdaRound iterations on fewer rows and a cap on each
finetuning stage's optimizer steps (the reference's schedule scaled down, ``GenQuantConfig.max_steps``);
and a few conventions (no ``--running_stat``, no shortcut split, FP latents into ``conv_in``).

The quantized generator keeps the diffusers interface: ``quantized_pipeline`` returns a StableDiffusionPipeline
whose ``unet`` is the quantized UNet2DConditionModel (quantizers attached by parametrization, hooks and an
attention processor), whose id (``generate.pipeline_id``) differs from the FP generator's, and ``generate()``
writes its quantization config into the set's key. A quest UNet serves the sampler schedule it was calibrated
on (its timesteps); another timestep raises. Numbers are simulated ("fake") quantization in float32: sampling
times measure the cost of simulating quantization on the CPU, not the speed of a real low-bit generator.
"""

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
    "build_generator",
    "calibrated_unet",
    "ff_layers",
    "ff_schedule",
    "finetune",
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
