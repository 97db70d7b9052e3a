#!/usr/bin/env python
"""Train a style token from a folder of artworks: the same as `styleprompt train`.

python train_style_token.py --model tiny --images ../shared/data/style --token "<s1>" --steps 30 --output /tmp/s1
accelerate launch train_style_token.py --images my_art/ --token "<my-style>" --mixed-precision fp16
"""

import sys

from styleprompt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
