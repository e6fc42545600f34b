"""gpt-repro: the GPT-1/2/3 data and training recipe as a library; stages/ are thin DVC entry points."""
