"""GPT-1's second half: supervised fine-tuning of the pretrained model on a labelled task (sec. 3.2-3.3)."""
