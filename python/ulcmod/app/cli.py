"""Command line: ``ulcmod discover`` (also ``python -m ulcmod``).

With no arguments it runs the embedded default: SmolLM2-135M-Instruct on the offline corpus
(19 minutes on a 2-core machine); ``--quick`` makes a minutes-long version. ``ulcmod analyze``
runs further analyses on a finished run's folder. Bad arguments end with one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from .. import __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"ulcmod: error: {message}\n")


def _int_list(text):
    try:
        values = []
        for part in filter(None, text.split(",")):
            lo, _, hi = part.partition("-")
            values += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
        return values
    except ValueError:
        message = f"expected comma-separated integers or ranges like 0-11, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _json_value(text):
    """A JSON value from inline JSON or from a .json file."""
    try:
        if os.path.isfile(text):
            with open(text) as f:
                return json.load(f)
        return json.loads(text)
    except (OSError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"expected inline JSON or a JSON file, got {text!r} ({err})") from None


def _device_map(text):
    from ..lm.models import DEVICE_MAPS

    return text if text in DEVICE_MAPS else _json_value(text)


def _json_object(text):
    value = _json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


# Models bigger than one device and activations bigger than memory (DiscoverConfig's names).
BIG_OPTIONS = ("device", "dtype", "device_map", "model_kwargs", "activations", "memory_budget", "iterd_device")


def _add_big_options(q) -> None:
    """--device, --dtype, --device-map, --model-kwargs, --activations, --memory-budget, --iterd-device."""
    from ..lm.models import DEVICE_MAPS, DTYPES

    g = q.add_argument_group("models bigger than one device, activations bigger than memory")
    g.add_argument("--device", help="torch device for the whole model, e.g. cuda or cuda:1 (default cpu)")
    g.add_argument("--dtype", choices=DTYPES, help="the model's weights (default float32)")
    g.add_argument("--device-map", type=_device_map,
                   help=f"spread the model over devices with accelerate: {', '.join(DEVICE_MAPS)}, or a map "
                        "{module path: device} as inline JSON or a .json file")
    g.add_argument("--model-kwargs", type=_json_object,
                   help="JSON object (inline or a file) of from_pretrained arguments, e.g. "
                        "'{\"attn_implementation\": \"sdpa\", \"max_memory\": {\"0\": \"20GB\", \"cpu\": \"60GB\"}, "
                        "\"offload_folder\": \"offload\"}'")
    g.add_argument("--activations",
                   help="skip extraction: read activations (samples x neurons, one row per --dataset prompt in "
                        "its order) from an extraction folder, a .npy file, FILE.h5[:DATASET] or STORE.zarr[:ARRAY]")
    g.add_argument("--memory-budget",
                   help="memory for the baselines' in-memory copies of the activations, e.g. 8G; above it they "
                        "run on a subsample of neurons (default: half of the memory available)")
    g.add_argument("--iterd-device", choices=("auto", "cpu", "cuda"),
                   help="where z-scoring, IterD and the module features run (default auto: on the GPU when "
                        "the model runs on one and ulcmod is built with CUDA)")


def build_parser():
    """The argument parser of `ulcmod` (discover, analyze)."""
    from ..analyses.baselines import METHODS
    from ..lm._store import STORAGE_DTYPES
    from .analyze import AnalyzeConfig
    from .discover import QUICK, DiscoverConfig

    d, a_d = DiscoverConfig(), AnalyzeConfig()
    p = _Parser(prog="ulcmod", description="Find function modules in large language models.")
    p.add_argument("--version", action="version", version=f"ulcmod {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    q = sub.add_parser("discover", help="activations -> IterD modules, baselines, metrics, figures, report")
    q.add_argument("--model", help="HF id, local folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    q.add_argument("--gguf-file", help="GGUF file name inside --model")
    q.add_argument("--dataset", default=d.dataset,
                   help="'corpus' (offline, default), 'infinity-instruct[:PATH]' or a .jsonl/.json/.csv/.parquet file")
    q.add_argument("--text-column", default=d.text_column,
                   help=f"column of a --dataset file holding the prompt text (default {d.text_column!r})")
    q.add_argument("--label-column", default=d.label_column,
                   help=f"column of a --dataset file holding the category (default {d.label_column!r})")
    q.add_argument("--site", default=d.site, help="mlp.act (default), mlp.out, mlp.gate, mlp.up or a raw module path")
    q.add_argument("--layers", type=_int_list, help="layers to read, e.g. 0-11 or 0,5,10 (default all)")
    q.add_argument("--k", type=_int_list, dest="ks", help=f"numbers of modules (default {','.join(map(str, d.ks))})")
    q.add_argument("--n-train", type=int, help=f"training prompts per category (default {d.n_train})")
    q.add_argument("--n-test", type=int, help=f"held-out prompts per category (default {d.n_test})")
    q.add_argument("--max-length", type=int, help=f"tokens per prompt (default {d.max_length})")
    q.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"prompts per forward pass during extraction (default {d.batch_size})")
    q.add_argument("--methods", default=",".join(d.methods), help=f"comma-separated subset of {list(METHODS)}")
    q.add_argument("--n-subclusters", type=int,
                   help=f"k-means sub-clusters for agglomerative/spectral (default {d.n_subclusters})")
    q.add_argument("--top", type=int, default=d.top, help="samples per module in the labelling prompts")
    q.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the train/test split, IterD and the baselines (default {d.seed})")
    q.add_argument("--significance", type=int, nargs="?", const=100, metavar="N_NULL",
                   help="test IterD's modules at every K against N_NULL row-permuted null matrices "
                        "(default 100 when given: p < 0.01 becomes reachable)")
    q.add_argument("--stability", type=int, nargs="?", const=20, metavar="N_RUNS",
                   help="IterD at every K over N_RUNS bootstrap resamples: each module's stability "
                        "(default 20 when given); with --significance also the K the data support")
    q.add_argument("--label-endpoint", help="OpenAI-compatible URL to send the labelling prompts to")
    q.add_argument("--label-model", default=d.label_model,
                   help=f"model name sent to --label-endpoint (default {d.label_model!r})")
    q.add_argument("--out", default=d.out, help="output folder (a rerun resumes its activations)")
    q.add_argument("--quick", action="store_true",
                   help=f"a minutes-long run: {QUICK['n_train']}+{QUICK['n_test']} prompts per category, "
                        f"K={','.join(map(str, QUICK['ks']))}")
    q.add_argument("--no-progress", action="store_true",
                   help="print nothing but the final summary: no stage lines or progress bars (also transformers')")
    q.add_argument("--label-with-categories", action="store_true",
                   help="tag each sample of the labelling prompts with its category (off by default: the tags "
                        "steer the labelling model toward the category names)")
    # The run folder and what it stores (issue 15).
    q.add_argument("--storage-dtype", choices=STORAGE_DTYPES,
                   help=f"dtype of the stored raw activations (default {d.storage_dtype}: half the disk of float32, "
                        f"values up to 65504; bfloat16 keeps float32's range)")
    q.add_argument("--overwrite", action="store_true",
                   help="replace a run in --out that was made with another model, prompts or settings (its "
                        "activations are kept when they still match)")
    _add_big_options(q)
    a = sub.add_parser("analyze", help="editing, selective pruning and MoEfication on a discover run's modules")
    a.add_argument("--run", help=f"the discover output folder (default {a_d.run})")
    a.add_argument("--k", type=int, help="IterD K to analyse (default: the run's K closest to its number of "
                                            "categories; with --quick its smallest K)")
    a.add_argument("--n-eval", type=int, help=f"held-out prompts per category for perplexity/top-1 "
                                                        f"(default {a_d.n_eval})")
    a.add_argument("--n-mmlu", type=int, help=f"MMLU questions (default {a_d.n_mmlu})")
    a.add_argument("--prune-fraction", type=float,
                   help=f"top fraction pruned per category (default {a_d.prune_fraction})")
    a.add_argument("--experts", type=int, dest="n_experts",
                   help=f"MoEfication experts per layer (default {a_d.n_experts})")
    a.add_argument("--seed", type=int, help=f"seed of the random controls, random model, ICA and experts "
                                            f"(default {a_d.seed})")
    a.add_argument("--threads", type=int,
                   help="CPU threads of the model's forward passes (default: one per core, or 1 when other "
                        "processes already keep the cores busy, where more threads only wait on each other)")
    a.add_argument("--quick", action="store_true",
                   help="a few-minutes version on few prompts and questions; its numbers are marked low-sample")
    a.add_argument("--no-progress", action="store_true",
                   help="print nothing but the final summary: no stage lines or progress bars (also transformers')")
    return p


def _config(cls, quick: dict, args, names):
    """`cls` from parsed arguments: its defaults, then --quick's values, then the options given."""
    cfg = cls(**(quick if args.quick else {}))
    for name in names:
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.progress = not args.no_progress
    return cfg


def analyze_config_from(args):
    """AnalyzeConfig from parsed arguments."""
    from .analyze import QUICK_ANALYZE, AnalyzeConfig

    cfg = _config(AnalyzeConfig, QUICK_ANALYZE, args, ("run", "k", "n_eval", "n_mmlu", "prune_fraction",
                                                        "n_experts", "seed", "threads"))
    if not 0 < cfg.prune_fraction <= 1:
        raise ValueError(f"--prune-fraction must be in (0, 1], got {cfg.prune_fraction}")
    return cfg


def config_from(args):
    """DiscoverConfig from parsed arguments (--quick first, explicit options over it)."""
    from .discover import QUICK, DiscoverConfig

    cfg = _config(DiscoverConfig, QUICK, args, (
        "model", "gguf_file", "dataset", "text_column", "label_column", "site", "layers", "ks", "n_train", "n_test",
        "max_length", "batch_size", "n_subclusters", "top", "seed", "significance", "stability", "label_endpoint",
        "label_model", "out", "storage_dtype", *BIG_OPTIONS))
    cfg.label_with_categories = args.label_with_categories
    cfg.overwrite = args.overwrite
    cfg.ks = tuple(cfg.ks)
    cfg.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return cfg


def main(argv=None) -> int:
    """Entry point of the `ulcmod` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["discover", *argv]  # `ulcmod` / `python -m ulcmod` alone run discover
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help, --version or a one-line usage error
        return int(exit_.code or 0)
    if args.command not in ("discover", "analyze"):
        build_parser().print_help()
        return 2
    with warnings.catch_warnings():
        formatwarning = warnings.formatwarning
        warnings.formatwarning = lambda message, *args, **kwargs: f"ulcmod: warning: {message}\n"
        try:
            return _run_command(args)
        finally:
            warnings.formatwarning = formatwarning


def _run_command(args) -> int:
    """Run a parsed command; bad input ends with one line on stderr and exit status 2."""
    try:
        if args.command == "analyze":
            from .analyze import analyze

            cfg = analyze_config_from(args)
            result = analyze(cfg)
            low = f"; low-sample ({'; '.join(result['low_sample'])})" if result["low_sample"] else ""
            print(f"analysed the IterD modules at K={result['K']} in {_duration(result['seconds'])}{low}")
            print(f"results: {cfg.run}/analysis.md; browse them with the modules in {cfg.run}/index.html")
            return 0
        from .discover import discover

        cfg = config_from(args)
        metrics = discover(cfg)
    except (ValueError, ImportError, OSError) as err:
        print("ulcmod: error: " + " ".join(str(err).split()), file=sys.stderr)  # always one line
        return 2
    v = metrics["verdict"]
    beats = ("yes" if v["iterd_L_beats_every_baseline_at_every_K"]
             else "no, it loses to " + ", ".join(v["iterd_L_loses_to"]))
    print(f"found IterD modules at K={','.join(map(str, cfg.ks))} in {metrics['n_neurons']:,} neurons of "
          f"{metrics['model_type']}; IterD's L beats every baseline at every K: {beats}"
          + ("; low-sample run" if metrics["low_sample"] else ""))
    print(f"browse them in {cfg.out}/index.html; report: {cfg.out}/report.md")
    return 0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
