"""T2I-CompBench's evaluation on transformers models: BLIP-VQA for attribute binding, an open-vocabulary detector
with the box-centre rules for spatial relations, CLIPScore for non-spatial ones, and the 3-in-1 mean for complex
prompts. The rules are the pure functions of `itercomp.evaluation.compbench`; this module feeds them.

Models load with `from_pretrained` (hub ids or local folders) the first time an aspect needs them. Where this
departs from the official scripts: docs/evaluation.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from itercomp.errors import ItercompError
from itercomp.evaluation import compbench
from itercomp.evaluation.base import Evaluator, EvaluatorConfig, check_inputs
from itercomp.evaluation.registry import register_evaluator
from itercomp.world.vocab import REWARD_ASPECTS

QUESTION_MAX_LENGTH = 35  # BLIP_VQA truncates questions to 35 tokens
DETECTORS = ("owlv2", "owlvit")  # model types whose outputs are per-query logits over image patches


@dataclass
class T2ICompBenchConfig(EvaluatorConfig):
    vqa_model: str = field(
        default="Salesforce/blip-vqa-base",
        metadata={"help": "BlipForQuestionAnswering hub id or folder (attribute binding, complex)"},
    )
    detector_model: str = field(
        default="google/owlv2-base-patch16-ensemble",
        metadata={"help": "OWLv2 or OWL-ViT hub id or folder (spatial, complex) in place of UniDet"},
    )
    clip_model: str = field(
        default="openai/clip-vit-base-patch32",
        metadata={"help": "CLIPModel hub id or folder (non-spatial, complex); ViT-B/32 as the official script"},
    )
    device: str = field(default="auto", metadata={"help": "torch device: auto (cuda when there is one), cpu, cuda:0"})
    batch_size: int = field(default=8, metadata={"help": "images per model call (one step of the progress bar)"})
    detection_threshold: float = field(
        default=0.1,
        metadata={"help": "detector confidence below which an object counts as not found (UniDet used 0.5; OWLv2's "
                          "confidences run lower)"},
    )  # fmt: skip
    iou_threshold: float = field(
        default=compbench.IOU_THRESHOLD,
        metadata={"help": "determine_position's overlap limit for left/right/top/bottom"},
    )
    distance_threshold: float = field(
        default=compbench.DISTANCE_THRESHOLD,
        metadata={"help": "determine_position's near/next-to distance, in pixels of the 479-pixel detection frame"},
    )
    max_noun_phrases: int = field(
        default=compbench.MAX_NOUN_PHRASES,
        metadata={"help": "noun phrases asked about per prompt (BLIP_vqa.py's np_num)"},
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("vqa_model", "detector_model", "clip_model"):
            if not str(getattr(self, name)).strip():
                raise ItercompError(f"{name} is empty; give a hub id or a folder, e.g. {name}=/models/{name}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ItercompError(f"device={self.device!r} is not a device; use auto, cpu, cuda or cuda:N")
        for name in ("detection_threshold", "iou_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ItercompError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.distance_threshold <= 0:
            raise ItercompError(f"distance_threshold={self.distance_threshold} must be > 0 (pixels; default 150)")
        if self.max_noun_phrases < 1:
            raise ItercompError(f"max_noun_phrases={self.max_noun_phrases} must be >= 1 (default 8)")


@register_evaluator("t2i_compbench")
class T2ICompBenchEvaluator(Evaluator):
    config_class = T2ICompBenchConfig

    def __init__(self, config: T2ICompBenchConfig | None = None):
        super().__init__(config)
        self._models: dict[str, tuple] = {}  # "vqa" / "detector" / "clip" -> (model, processor), loaded on demand

    @property
    def device(self):
        import torch

        if self.config.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.config.device)

    def _load(self, kind: str) -> tuple:
        if kind not in self._models:
            from transformers import (
                AutoModelForZeroShotObjectDetection,
                AutoProcessor,
                BlipForQuestionAnswering,
                CLIPModel,
            )

            option, cls = {
                "vqa": ("vqa_model", BlipForQuestionAnswering),
                "detector": ("detector_model", AutoModelForZeroShotObjectDetection),
                "clip": ("clip_model", CLIPModel),
            }[kind]
            name = getattr(self.config, option)
            try:
                model = cls.from_pretrained(name).to(self.device).eval()
                processor = AutoProcessor.from_pretrained(name)
            except (OSError, ValueError) as e:
                raise ItercompError(
                    f"cannot load {option}={name!r} ({str(e).splitlines()[0]}); give a local folder or a hub id "
                    f"that can be downloaded ({option}=PATH)"
                ) from None
            if kind == "detector" and model.config.model_type not in DETECTORS:
                raise ItercompError(
                    f"detector_model={name!r} is a {model.config.model_type} model; use an OWLv2 or OWL-ViT "
                    "checkpoint (e.g. google/owlv2-base-patch16-ensemble)"
                )
            self._models[kind] = (model, processor)
        return self._models[kind]

    # ---- the evaluator's call -----------------------------------------------------------------------------------

    def score(self, images, prompts, aspects) -> list[dict]:
        check_inputs(images, prompts, aspects)
        images = [np.asarray(image, dtype=np.uint8) for image in images]
        parts = [compbench.complex_parts(p) if a == "complex" else (a,) for p, a in zip(prompts, aspects)]
        need = {a: [i for i, own in enumerate(parts) if a in own] for a in REWARD_ASPECTS}
        texts = [compbench.strip_modifiers(p) if a == "complex" else p for p, a in zip(prompts, aspects)]
        found: dict[str, dict[int, dict]] = {
            "attribute_binding": self._attribute(images, prompts, need["attribute_binding"]),
            "spatial_relationship": self._spatial(images, prompts, need["spatial_relationship"]),
            "non_spatial_relationship": self._non_spatial(images, texts, need["non_spatial_relationship"]),
        }
        rows = []
        for i, aspect in enumerate(aspects):
            if aspect != "complex":
                details = dict(found[aspect][i])
                rows.append({"score": details.pop("score"), "correct": None, **details})
                continue
            scores = {a: found[a][i]["score"] for a in parts[i]}
            combined = compbench.three_in_one(
                scores["attribute_binding"], scores.get("spatial_relationship"), scores.get("non_spatial_relationship")
            )
            rows.append({"score": combined, "correct": None, "parts": {a: found[a][i] for a in parts[i]}})
        return rows

    # ---- attribute binding: BLIP-VQA -------------------------------------------------------------------------

    def _attribute(self, images, prompts, indices) -> dict[int, dict]:
        """P(yes) of "<noun phrase>?" for each phrase of each prompt, and their product."""
        if not indices:
            return {}
        import torch

        model, processor = self._load("vqa")
        tokenizer = processor.tokenizer
        yes_id, no_id = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
        if tokenizer.unk_token_id in (yes_id, no_id):
            raise ItercompError(f"vqa_model={self.config.vqa_model!r}: its tokenizer has no 'yes' or 'no' token")
        phrases = {i: compbench.noun_phrases(prompts[i])[: self.config.max_noun_phrases] for i in indices}
        pairs = [(k, phrase) for k, i in enumerate(indices) for phrase in phrases[i]]
        p_yes: list[float] = []
        if pairs:
            with torch.no_grad():
                pixels = processor.image_processor(images=[images[i] for i in indices], return_tensors="pt")
                image_embeds = model.vision_model(pixel_values=pixels.pixel_values.to(self.device)).last_hidden_state
                question = tokenizer(
                    [f"{phrase}?" for _, phrase in pairs], padding=True, truncation=True,
                    max_length=QUESTION_MAX_LENGTH, return_tensors="pt",
                ).to(self.device)  # fmt: skip
                embeds = image_embeds[torch.tensor([k for k, _ in pairs], device=self.device)]
                states = model.text_encoder(
                    input_ids=question.input_ids, attention_mask=question.attention_mask,
                    encoder_hidden_states=embeds,
                    encoder_attention_mask=torch.ones(embeds.shape[:-1], dtype=torch.long, device=self.device),
                ).last_hidden_state  # fmt: skip
                start = torch.full((len(pairs), 1), model.decoder_start_token_id, device=self.device)
                logits = model.text_decoder(
                    input_ids=start, encoder_hidden_states=states, encoder_attention_mask=question.attention_mask
                ).logits[:, 0, :]
                p_yes = compbench.yes_probability(logits.float(), yes_id, no_id).cpu().tolist()
        out, position = {}, 0
        for i in indices:
            mine = p_yes[position : position + len(phrases[i])]
            position += len(phrases[i])
            out[i] = {"score": compbench.attribute_score(mine), "phrases": phrases[i], "p_yes": mine}
        return out

    # ---- spatial relationships: an open-vocabulary detector and determine_position ----------------------------

    def _spatial(self, images, prompts, indices) -> dict[int, dict]:
        parsed = {i: compbench.parse_spatial(prompts[i]) for i in indices}
        out = {i: {"score": 0.0, "relation": None} for i in indices if parsed[i] is None}
        todo = [i for i in indices if parsed[i] is not None]
        if not todo:
            return out
        import torch

        model, processor = self._load("detector")
        # One query per distinct noun: "a dog next to a dog" finds one box for both, as UniDet's one label does.
        queries = [list(dict.fromkeys([parsed[i].subject, parsed[i].object])) for i in todo]
        with torch.no_grad():
            inputs = processor(text=queries, images=[images[i] for i in todo], return_tensors="pt").to(self.device)
            outputs = model(**inputs)
        scores = torch.sigmoid(outputs.logits).float().cpu().numpy()  # B x patches x queries (padded to 2)
        boxes = outputs.pred_boxes.float().cpu().numpy()  # B x patches x 4: centre x, centre y, width, height in [0, 1]
        for k, i in enumerate(todo):
            height, width = images[i].shape[:2]
            frame = pixel_boxes(boxes[k], height, width, padded=model.config.model_type == "owlv2")
            frame = frame * compbench.unidet_scale(height, width)
            found = compbench.best_detections(scores[k][:, : len(queries[k])], frame, self.config.detection_threshold)
            relation = parsed[i]
            first, second = found[0], found[queries[k].index(relation.object)]
            out[i] = {
                "score": compbench.spatial_score(
                    relation.locality, first, second, self.config.iou_threshold, self.config.distance_threshold
                ),
                "relation": relation.locality,
                "objects": [relation.subject, relation.object],
                "detections": [None if d is None else {"confidence": d[0], "box": list(d[1])} for d in (first, second)],
            }
        return out

    # ---- non-spatial relationships: CLIPScore ----------------------------------------------------------------

    def _non_spatial(self, images, texts, indices) -> dict[int, dict]:
        if not indices:
            return {}
        import torch

        model, processor = self._load("clip")
        with torch.no_grad():
            pixels = processor.image_processor(images=[images[i] for i in indices], return_tensors="pt")
            text = processor.tokenizer([texts[i] for i in indices], padding=True, truncation=True, return_tensors="pt")
            image_embeds = _features(model.get_image_features(pixel_values=pixels.pixel_values.to(self.device)))
            text_embeds = _features(model.get_text_features(**text.to(self.device)))
        similarity = compbench.clip_similarity(image_embeds.cpu(), text_embeds.cpu()).tolist()
        return {i: {"score": s, "text": texts[i]} for i, s in zip(indices, similarity)}


def pixel_boxes(boxes: np.ndarray, height: int, width: int, padded: bool) -> np.ndarray:
    """N x 4 detector boxes (centre x, centre y, width, height, relative) -> pixel corners (x_min, y_min, x_max,
    y_max). OWLv2 pads an image to a square (bottom and right) before it resizes, so its boxes are relative to the
    padded side; OWL-ViT's are relative to the image's own width and height."""
    cx, cy, w, h = boxes.T
    sx, sy = (max(height, width),) * 2 if padded else (width, height)
    return np.stack([(cx - w / 2) * sx, (cy - h / 2) * sy, (cx + w / 2) * sx, (cy + h / 2) * sy], -1)


def _features(output):
    """transformers 5 returns the projected features as `pooler_output` of an output object, 4 as a tensor."""
    return getattr(output, "pooler_output", output)
