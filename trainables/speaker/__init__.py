"""OS-KDFT2 for speaker verification: one-step distillation of a speech SSL model and fine-tuning.

Plain PyTorch, no Ray, like the rest of trainables/:
- `teacher`: the frozen torchaudio SSL teacher (config, build, weights, hidden states);
- `student`: the 2-layer student initialised from it, the DistilHuBERT prediction heads and the
  target-task feature tuner (TFT);
- `losses`: the distillation loss and the speaker losses;
- `data`: the prepared speaker-dataset format and the VoxCeleb1 / LibriSpeech readers;
- `synthetic`: the embedded synthetic default (voice-like target and out-of-domain speakers);
- `metrics`: EER, minDCF, cosine scoring;
- `evaluation`: embeddings of utterances or crops, scored over a trial list;
- `curriculum`: the share of target-domain audio in the distillation branch over training;
- `student_training`: `train_oskdft2` and the exported student;
- `teacher_training`: `train_ssl_teacher`, the embedded default's teacher.
"""
