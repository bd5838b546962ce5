"""The library's jobs: one call per job kind, the way the CLI, the API's worker and scripts run them.

    from portrait import jobs
    result = jobs.run(Path("photos"), ["studio-grey"], Path("out"), jobs.RunConfig.from_dict({"variants": 1}),
                      progress=jobs.OverallProgress("run"), cancel=threading.Event())
    result.to_dict()                                  # what `portrait run --json` prints

Each job is `(inputs..., out_dir, config=None, *, progress=None, cancel=None) -> Result` and writes only
under out_dir. Configs are frozen and validated when built (`from_dict` for mappings: ConfigError naming
an unknown key or a bad value); results have `to_dict()`. `progress(stage, done, total)` reports the
stages of STAGES; `cancel` (anything with is_set()) is checked between photos, templates and variants
and at every diffusion and training step, and raises portrait.errors.Cancelled (code "cancelled"); a
cancelled job writes no result file. Errors are portrait.errors.PortraitError subclasses with stable codes.
"""

from .batch_job import batch
from .configs import CreateConfig, EmbedConfig, GenerateConfig, PreprocessConfig, RunConfig, TrainConfig
from .create_job import create
from .embed_job import embed
from .generate_job import generate
from .pipeline import PortraitPipeline
from .preprocess_job import preprocess
from .results import BatchResult, CreateResult, EmbedResult, GenerateResult, PreprocessResult, RunResult, TrainResult
from .run_job import run, template_names
from .stages import JOB_STAGES, STAGES, OverallProgress
from .train_job import train

__all__ = ["JOB_STAGES", "STAGES", "BatchResult", "CreateConfig", "CreateResult", "EmbedConfig", "EmbedResult", "GenerateConfig", "GenerateResult",
           "OverallProgress", "PortraitPipeline", "PreprocessConfig", "PreprocessResult", "RunConfig", "RunResult", "TrainConfig",
           "TrainResult", "batch", "create", "embed", "generate", "preprocess", "run", "template_names", "train"]

