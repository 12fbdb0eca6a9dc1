"""SWAMP with the Hugging Face Trainer: a tiny BERT built from a config (no download), dict batches.

The task is synthetic: sequences of 8 tokens from a vocabulary of 32, labelled by whether the first token is in
the lower half of the vocabulary. Each particle is one Trainer.train() with the SWAMP TrainerCallback.

    pip install 'swamp-toolkit[huggingface]'
    python examples/huggingface_swamp.py            # 3 cycles x 3 particles x 4 epochs
    python examples/huggingface_swamp.py --quick    # 3 cycles x 2 particles x 3 epochs, seconds on a CPU
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments
from transformers.utils import logging as hf_logging

from training.integrations.cycles import Cycle
from training.integrations.huggingface import swamp_huggingface

VOCAB, LENGTH = 32, 8


class FirstTokenTask(torch.utils.data.Dataset):
    """``size`` sequences of random tokens; the label is 1 when the first token is below VOCAB / 2."""

    def __init__(self, size: int, seed: int):
        self.ids = torch.randint(0, VOCAB, (size, LENGTH), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": (self.ids[i, 0] < VOCAB // 2).long()}


def main(argv: list[str] | None = None) -> list[tuple[Cycle, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 particles of 3 epochs per cycle")
    options = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2)
    model = BertForSequenceClassification(config)
    test = FirstTokenTask(512, seed=1)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, num_train_epochs=3 if options.quick else 4, learning_rate=3e-3,
                                 per_device_train_batch_size=32, use_cpu=True, report_to=[], save_strategy="no",
                                 logging_strategy="no", disable_tqdm=True)
        cycles = swamp_huggingface(model, args, FirstTokenTask(1024, seed=0), cycles=3,
                                   particles=2 if options.quick else 3, ratio=0.2, fraction=0.5)
    results = []
    for cycle in cycles:
        model.load_state_dict(cycle.state)
        model.eval()
        with torch.no_grad():
            batch = test[:]
            accuracy = (model(input_ids=batch["input_ids"]).logits.argmax(1) == batch["labels"]).float().mean().item()
        print(f"cycle {cycle.cycle}: density {cycle.density:.3f}, test accuracy of the average {accuracy:.3f}")
        results.append((cycle, accuracy))
    return results


if __name__ == "__main__":
    main()
