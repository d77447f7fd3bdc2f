"""Activation extraction speed against a bare forward pass of the same batches.

    python benchmarks/bench_extract.py [--n 48] [--max-length 128] [--batch-size 8]

Model: the embedded default (SmolLM2-135M-Instruct, CPU, float32). Prompts: the first `n` test
prompts of the offline corpus, chat template on, length-sorted batches as extraction makes
them. "bare" runs ``model(...)`` on those batches (logits included); "bare, no LM head" runs the
decoder stack only. Extraction reads mlp.act at all 30 layers (46,080 neurons) into a float16
file. Peak RSS is the process maximum after each stage.
"""

import argparse
import resource
import tempfile
import time

import torch

import ulcmod
from ulcmod.lm._batches import encode, longest_first, pad_batch

from _common import write_table


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    model, tok = ulcmod.load_model()
    texts = [p.text for p in ulcmod.load_corpus(split="test")[: args.n]]
    ids = encode(tok, texts, True, args.max_length)
    batches = [pad_batch([ids[k] for k in batch], tok.pad_token_id, "cpu")
               for batch in longest_first(ids, args.batch_size)]
    n_tokens = sum(len(x) for x in ids)
    rss_loaded = peak_rss_mib()

    def bare(decoder_only):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for input_ids, mask in batches:
                (model.model if decoder_only else model)(input_ids=input_ids, attention_mask=mask.long(),
                                                         use_cache=False)
        return time.perf_counter() - t0

    rows = []
    bare(False)  # warm-up
    t_bare = bare(False)
    t_decoder = bare(True)
    rss_bare = peak_rss_mib()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        ulcmod.extract_activations(model, tok, texts, d, max_length=args.max_length, batch_size=args.batch_size,
                                   progress=False)
        t_extract = time.perf_counter() - t0
    rss_extract = peak_rss_mib()
    for name, t, rss in (("bare forward (with LM head)", t_bare, rss_bare),
                         ("bare forward, no LM head", t_decoder, rss_bare),
                         ("extract_activations, mlp.act x 30 layers", t_extract, rss_extract)):
        rows.append([name, f"{t:.2f}", f"{n_tokens / t:.0f}", f"{t / t_bare:.2f}", f"{t / t_decoder:.2f}",
                     f"{rss:.0f}"])
        print(rows[-1], flush=True)
    write_table("extract", "Activation extraction vs a bare forward pass (SmolLM2-135M-Instruct, CPU)",
                f"python benchmarks/bench_extract.py --n {args.n} --max-length {args.max_length} "
                f"--batch-size {args.batch_size}",
                ["stage", "seconds", "tokens/s", "vs bare", "vs bare no head", "peak RSS MiB"], rows,
                notes=[f"{args.n} prompts, {n_tokens} tokens in {len(batches)} length-sorted batches; "
                       f"RSS after loading the model: {rss_loaded:.0f} MiB.",
                       "Extraction time includes tokenisation, the probe pass and writing the float16 file."])


if __name__ == "__main__":
    main()
