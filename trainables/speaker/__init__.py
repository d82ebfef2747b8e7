"""OS-KDFT2 for speaker verification: one-step distillation of a speech SSL model and fine-tuning.

Plain PyTorch, no Ray, like the rest of trainables/:
- `models`: the frozen torchaudio SSL teacher, the 2-layer student initialised from it, the
  DistilHuBERT prediction heads and loss, the target-task feature tuner (TFT), the speaker losses;
- `data`: the prepared speaker-dataset format and the VoxCeleb1 / LibriSpeech readers;
- `synthetic`: the embedded synthetic default (voice-like target and out-of-domain speakers);
- `metrics`: EER, minDCF, cosine scoring;
- `curriculum`: the share of target-domain audio in the distillation branch over training;
- `training`: `train_ssl_teacher`, `train_oskdft2` and the exported student.
"""
