"""QLoRA fine-tuning on datagen's exported data.

    datagen export --out data.json
    train qlora --data data.json --model-name-or-path smollm2 --output-dir runs/a [--packing] [--bits 4|8|16]
    train generate --adapter runs/a/adapter --prompt "..."      # one reply, same template as training
    train chat --adapter runs/a/adapter                         # interactive
    train merge --adapter runs/a/adapter --out merged/          # into the 16-bit base, never a 4-bit one

Modules: templates.toml/templates.py (prompt formats), data.py (reading, masking, packing),
model.py (loading, quantization, LoRA), qlora.py (the loop, checkpoints, logs), merge.py, chat.py, cli.py.
"""
