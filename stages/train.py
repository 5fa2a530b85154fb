"""Stage `train@<profile>`: train one profile, resuming from its last checkpoint when valid.

    python -m stages.train --profile smoke [--steps N] [--params params.yaml]

Also the script torchrun starts (`make train-ddp`). All the work is in bytechat.train.trainer.
"""

from bytechat.train.trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
