"""Check `datagen export --format llama-factory` folders with LLaMA-Factory's own data loader (not CI).

    python bench/llamafactory_check.py [--venv /tmp/lf-venv] [--install-only]

It makes its own virtualenv (LLaMA-Factory pins its own transformers/datasets, which must not touch
the project's), installs CPU torch 2.13.0 and then `llamafactory` from the package index, builds a
small review database (English and Chinese samples, reviewer edits, approvals and rejections), exports
it as LLaMA-Factory folders of every kind and layout, and in the virtualenv runs LLaMA-Factory's
`get_dataset` on each folder, exactly as `llamafactory-cli train --dataset_dir DIR --dataset NAME`
would, with a tiny tokenizer made on the spot (no network). It prints, per folder, the rows its
converter produced against the rows datagen wrote, and one decoded example.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sh(*args: str, **kw) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, **kw)


def ensure_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        sh(sys.executable, "-m", "venv", str(venv))
    probe = subprocess.run([str(py), "-c", "import llamafactory, sys; print(llamafactory.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        t0 = time.monotonic()
        sh(str(py), "-m", "pip", "install", "-q", "torch==2.13.0")  # the CPU wheel, from local disk: before llamafactory pulls a CUDA one
        sh(str(py), "-m", "pip", "install", "-q", "llamafactory")
        print(f"installed in {time.monotonic() - t0:.0f} s", flush=True)
    return py


def build_db(path: Path) -> str:
    """A run per language with kept, edited, approved and rejected samples, through the library's review calls."""
    from datagen import storage
    from datagen.records import Candidate, Instance, Status
    from datagen.storage import queries

    url = f"sqlite:///{path}"
    engine = storage.connect(url)
    rows = {
        "en": [("Write a haiku about rain.", [("", "Rain taps the roof.")]),
               ("Translate the sentence into French.", [("Good morning.", "Bonjour.")]),
               ("List three prime numbers.", [("", "2, 3, 5")]),
               ("Summarize the text in one sentence.", [("The cat sat on the mat all day.", "A cat sat.")])],
        "zh": [("把下面的句子翻译成英文。", [("你好，世界。", "Hello, world.")]),
               ("写一首关于秋天的短诗。", [("", "秋风起，落叶黄。")])],
    }
    ids = []
    for lang, samples in rows.items():
        run, _ = storage.open_run(engine, f"bench-{lang}", lang=lang, api="chat", model="stub", target=len(samples), config={})
        for text, inst in samples:
            c = Candidate(instruction=text, lang=lang, status=Status.accepted, instances=[Instance(input=i, output=o) for i, o in inst])
            c.sample_id = storage.add_sample(engine, run.id, c)
            storage.finish_sample(engine, c.sample_id, c)
            ids.append(c.sample_id)
    queries.edit_sample(engine, ids[0], actor="bench", instances=[Instance(input="", output="Rain taps the tin roof at night.")])
    queries.edit_sample(engine, ids[4], actor="bench", instances=[Instance(input="你好，世界。", output="Hello, world!")])
    for sid in (ids[0], ids[1], ids[4]):
        queries.review_sample(engine, sid, "approve", actor="bench")
    queries.review_sample(engine, ids[3], "reject", actor="bench")
    storage.dispose_all()
    return url


CHECK = r'''
import json, sys
from pathlib import Path
from transformers import PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
from llamafactory.hparams import get_train_args
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
import llamafactory

folder, name, stage, tokdir = sys.argv[1:5]
loader_stage = {"dpo": "rm"}.get(stage, stage)  # LLaMA-Factory's DPO workflow loads its data as stage "rm"
if not Path(tokdir, "tokenizer.json").exists():
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(["hello world rain roof french bonjour prime numbers"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>", bos_token="<s>", pad_token="<pad>").save_pretrained(tokdir)
# The exact training line datagen printed, as LLaMA-Factory's own argument parser reads it; only the
# model (a tiny local tokenizer: no network), its template and the output folder are swapped.
import shlex
argv = shlex.split(sys.argv[5])[2:]
args = dict(zip([a.removeprefix("--") for a in argv[0::2]], argv[1::2]))
assert args["dataset_dir"] == folder and args["dataset"] == name and args["stage"] == stage, args
args.update(model_name_or_path=tokdir, template="default", output_dir=str(Path(tokdir) / "out"),
            overwrite_cache="true", preprocessing_num_workers="1", report_to="none")
# A list, as `llamafactory-cli train ARGS` hands sys.argv[1:] to the same parser (strings typed by argparse).
model_args, data_args, training_args, finetuning_args, _ = get_train_args([x for k, v in args.items() for x in (f"--{k}", v)])
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(tokdir)
template = get_template_and_fix_tokenizer(tok, data_args)
module = get_dataset(template, model_args, data_args, training_args, stage=loader_stage, tokenizer=tok)
ds = module["train_dataset"]
first = ds[0]
key = "chosen_input_ids" if "chosen_input_ids" in first else "input_ids"
print(json.dumps({"llamafactory": llamafactory.__version__, "rows": len(ds), "columns": sorted(ds.column_names),
                  "first": tok.decode(first[key])[:160]}, ensure_ascii=False))
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", default="/tmp/lf-venv")
    ap.add_argument("--install-only", action="store_true")
    args = ap.parse_args()
    py = ensure_venv(Path(args.venv))
    if args.install_only:
        return 0

    from datagen import storage
    from datagen.export import Selection, write

    work = Path(tempfile.mkdtemp(prefix="lf-check-"))
    engine = storage.connect(build_db(work / "bench.db"))
    cases = [("sft", "alpaca", "sft", "accepted"), ("sft", "sharegpt", "sft", "accepted"),
             ("preference", "alpaca", "dpo", "any"), ("preference", "sharegpt", "dpo", "any"),
             ("kto", "alpaca", "kto", "any"), ("kto", "sharegpt", "kto", "any")]
    ok = True
    for kind, layout, stage, status in cases:
        out = work / f"{kind}-{layout}"
        res = write(engine, out, Selection(status=status), fmt="llama-factory", kind=kind, layout=layout)
        info = json.loads((out / "dataset_info.json").read_text())
        name = next(iter(info))
        p = subprocess.run([str(py), "-c", CHECK, str(out), name, stage, str(work / "tok"), res.train_line], capture_output=True, text=True)
        if p.returncode != 0:
            ok = False
            print(f"{kind}/{layout}: LLaMA-Factory failed:\n{p.stderr[-3000:]}")
            continue
        got = json.loads(p.stdout.strip().splitlines()[-1])
        same = got["rows"] == res.rows
        ok &= same
        print(f"{kind}/{layout} ({stage}): datagen wrote {res.rows} rows, LLaMA-Factory {got['llamafactory']} loaded {got['rows']} "
              f"{'OK' if same else 'MISMATCH'}; columns {got['columns']}; first: {got['first']!r}")
    storage.dispose_all()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
