"""A bidirectional GRU encoder with the heads brew trains, as a `transformers` model (model type `brew-bigru`).

This file imports only torch and transformers: brew saves it beside a BiGRU's weights (config.json's `auto_map`),
so `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` loads the folder
without brew installed.

Layer 0 is the embedding output, projected to `hidden_size` when `embedding_size` differs; layer k is the output
of GRU layer k, both directions side by side (`hidden_size / 2` each), so every hidden state is `hidden_size`
wide. Padding must be on the right (BERT-style tokenizers pad there): the backward direction reads each row
reversed within its own length, so padding never reaches a real token, and the model exports to ONNX without
packed sequences.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (BaseModelOutput, QuestionAnsweringModelOutput, SequenceClassifierOutput,
                                           TokenClassifierOutput)


class BrewBiGRUConfig(PreTrainedConfig):
    model_type = "brew-bigru"

    def __init__(self, vocab_size: int = 30522, embedding_size: int = 384, hidden_size: int = 384,
                 num_hidden_layers: int = 1, hidden_dropout_prob: float = 0.1, max_position_embeddings: int = 512,
                 initializer_range: float = 0.02, pad_token_id: int | None = 0, **kwargs):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size  # both directions: hidden_size / 2 each
        self.num_hidden_layers = num_hidden_layers
        self.hidden_dropout_prob = hidden_dropout_prob
        self.max_position_embeddings = max_position_embeddings  # no position table: the longest input brew feeds
        self.initializer_range = initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)


def reversal(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) gather indices that reverse each row's first `length` positions and leave the padding after them in
    place. Made from the mask alone, so an export keeps the sequence axis dynamic."""
    lengths = attention_mask.long().sum(1, keepdim=True).clamp(min=1)
    steps = torch.cumsum(torch.ones_like(attention_mask, dtype=torch.long), 1) - 1
    return torch.where(steps < lengths, lengths - 1 - steps, steps)


def reverse_within(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) with each row reversed within its length (`index` from `reversal`); its own inverse."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


class BrewBiGRULayer(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.forward_gru = nn.GRU(width, width // 2, batch_first=True)
        self.backward_gru = nn.GRU(width, width // 2, batch_first=True)

    def forward(self, x, index):
        ahead, _ = self.forward_gru(x)
        back, _ = self.backward_gru(reverse_within(x, index))
        return torch.cat([ahead, reverse_within(back, index)], dim=-1)


class BrewBiGRUPreTrainedModel(PreTrainedModel):
    config_class = BrewBiGRUConfig
    base_model_prefix = "bigru"
    main_input_name = "input_ids"

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.GRU):
            for name, p in module.named_parameters():
                if "weight_hh" in name:
                    for gate in p.data.chunk(3, 0):
                        nn.init.orthogonal_(gate)
                elif "weight_ih" in name:
                    nn.init.xavier_uniform_(p.data)
                else:
                    nn.init.zeros_(p.data)


class BrewBiGRUModel(BrewBiGRUPreTrainedModel):
    def __init__(self, config: BrewBiGRUConfig):
        super().__init__(config)
        if config.hidden_size % 2:
            raise ValueError(f"hidden_size {config.hidden_size} must be even: half of it runs each direction")
        pad = config.pad_token_id if config.pad_token_id is not None and config.pad_token_id < config.vocab_size else None
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=pad)
        self.projection = (nn.Linear(config.embedding_size, config.hidden_size)
                           if config.embedding_size != config.hidden_size else nn.Identity())
        self.layers = nn.ModuleList(BrewBiGRULayer(config.hidden_size) for _ in range(config.num_hidden_layers))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=None, return_dict=None, **kwargs):
        # token_type_ids, position_ids, output_attentions: accepted and unused (no segments, positions or attention)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        index = reversal(attention_mask)
        x = self.projection(self.embeddings(input_ids))
        states = [x]
        for layer in self.layers:
            x = layer(self.dropout(x), index)
            states.append(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None)


class _Headed(BrewBiGRUPreTrainedModel):
    def __init__(self, config, outputs: int):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bigru = BrewBiGRUModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.head = nn.Linear(config.hidden_size, outputs)
        self.post_init()

    def encode(self, input_ids, attention_mask, output_hidden_states):
        return self.bigru(input_ids, attention_mask, output_hidden_states=output_hidden_states)


class BrewBiGRUForSequenceClassification(_Headed):
    """The last state of each direction (the forward one at the row's last token, the backward one at its
    first), side by side, then a linear layer."""

    def __init__(self, config):
        super().__init__(config, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, labels=None, output_hidden_states=None, return_dict=None,
                **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encode(input_ids, attention_mask, output_hidden_states)
        h, half = out.last_hidden_state, self.config.hidden_size // 2
        last = (attention_mask.long().sum(1).clamp(min=1) - 1).view(-1, 1, 1).expand(-1, 1, half)
        pooled = torch.cat([h[:, :, :half].gather(1, last).squeeze(1), h[:, 0, half:]], dim=-1)
        logits = self.head(self.dropout(pooled))
        return SequenceClassifierOutput(loss=self._loss(logits, labels), logits=logits,
                                        hidden_states=out.hidden_states)

    def _loss(self, logits, labels):
        if labels is None:
            return None
        kind = self.config.problem_type or ("regression" if self.num_labels == 1 else
                                            "single_label_classification" if labels.dtype in (torch.long, torch.int)
                                            else "multi_label_classification")
        if kind == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float().view(-1)) if self.num_labels == 1 \
                else nn.functional.mse_loss(logits, labels.float())
        if kind == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class BrewBiGRUForTokenClassification(_Headed):
    def __init__(self, config):
        super().__init__(config, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, labels=None, output_hidden_states=None, return_dict=None,
                **kwargs):
        out = self.encode(input_ids, attention_mask, output_hidden_states)
        logits = self.head(self.dropout(out.last_hidden_state))
        loss = None if labels is None else nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class BrewBiGRUForQuestionAnswering(_Headed):
    def __init__(self, config):
        super().__init__(config, 2)

    def forward(self, input_ids=None, attention_mask=None, start_positions=None, end_positions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        out = self.encode(input_ids, attention_mask, output_hidden_states)
        start, end = self.head(out.last_hidden_state).split(1, dim=-1)
        start, end = start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            n = start.size(1)
            ce = nn.CrossEntropyLoss(ignore_index=n)
            loss = (ce(start, start_positions.clamp(0, n)) + ce(end, end_positions.clamp(0, n))) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start, end_logits=end,
                                            hidden_states=out.hidden_states)


HEADS = {"none": BrewBiGRUModel, "sequence": BrewBiGRUForSequenceClassification,
         "token": BrewBiGRUForTokenClassification, "span": BrewBiGRUForQuestionAnswering}
