# t2i_lightning: every target that runs Python depends on `install`, which builds .venv once.
# Override any variable on the command line, e.g. `make data TRAIN_N=2000 WORKERS=8`.

SHELL        := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS   ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
T2I          := $(VENV)/bin/t2i
STAMP        := $(VENV)/.installed-stamp

DATA         ?= data/shapes
RUNS         ?= runs
# make splits file names at spaces, so a folder with one would be read as two targets (`make data` into
# the wrong path): refuse it at once.
ifneq ($(words $(DATA)) $(words $(RUNS)),1 1)
$(error DATA="$(DATA)" and RUNS="$(RUNS)" must be paths without spaces (make splits names at spaces): use a symlink without spaces to the folder)
endif
ACCELERATOR  ?= auto
DEVICES      ?= auto
WORKERS      ?= $(shell nproc 2>/dev/null || echo 2)
SEED         ?= 0
SIZE         ?= 256
TRAIN_N      ?= 20000
VAL_N        ?= 1000
TEST_N       ?= 1000
# Chance that a caption names a single object's position; empty = the generator's default
# (data/shapes/defaults.POSITION_PROB), so the demo's index.json records nothing extra.
POSITION_PROB ?=
PYTEST_ARGS  ?=
BENCH_FLAGS  ?=
EVAL_FLAGS   ?=
EVAL_DECODER_FLAGS ?=

# Every `t2i` command a target runs appends its wall time and peak memory to this file; `make bench`
# reports them as the demo's stage table. Tests and the bench itself run with it unset.
export T2I_TIMINGS ?= $(abspath $(RUNS))/bench/stages.jsonl

# CLIP space. By default the project trains its own small CLIP (`make clip`); name a pretrained
# open_clip model instead with CLIP_MODEL=ViT-B-32 CLIP=laion2b_s34b_b79k (a tag, fetched where
# there is internet) or CLIP=/path/to/weights.safetensors, and `make clip` does nothing.
CLIP_MODEL   ?= shapes-cnn-tiny
CLIP         ?=
CLIP_CKPT    ?= $(RUNS)/clip/checkpoints/last.ckpt
CLIP_WEIGHTS := $(if $(CLIP),$(CLIP),$(CLIP_CKPT))
CLIP_ID      ?= $(CLIP_MODEL)$(if $(CLIP),-$(notdir $(basename $(CLIP))),)
EMB          ?= $(DATA)/emb-$(CLIP_ID)
# The embeddings' width, stats.json's "dim" (512 for ViT-B-32), read by the shell when a recipe runs: the
# translator and the decoder are built that wide, whatever their stage configs say (the demo CLIP's 256).
EMB_DIM       = $$($(PY) -c 'import json,sys; print(json.load(open(sys.argv[1]))["dim"])' $(EMB)/stats.json)
TRANSLATOR_CKPT ?= $(RUNS)/translator/checkpoints/last.ckpt
DECODER_CKPT ?= $(RUNS)/decoder/checkpoints/last.ckpt
DECODER_TEXT_CKPT ?= $(RUNS)/decoder_text/checkpoints/last.ckpt
UPSAMPLER_CKPT ?= $(RUNS)/upsampler/checkpoints/last.ckpt
SCORE_CKPT   ?= $(RUNS)/score/checkpoints/last.ckpt
CAPTIONER_CKPT ?= $(RUNS)/captioner/checkpoints/last.ckpt
JUDGE_CKPT   ?= $(RUNS)/judge/checkpoints/last.ckpt
# The latent route: an autoencoder trained here, the latents of DATA it encodes, and decoders on them.
AUTOENCODER_CKPT ?= $(RUNS)/autoencoder/checkpoints/last.ckpt
LATENTS      ?= $(DATA)/latents
DECODER_LATENT_CKPT ?= $(RUNS)/decoder_latent/checkpoints/last.ckpt
DECODER_TEXT_LATENT_CKPT ?= $(RUNS)/decoder_text_latent/checkpoints/last.ckpt
GUIDANCE     ?= 3
PROMPT       ?= a red circle
N            ?= 8
SAMPLER      ?= ddim
STEPS        ?= 50
CFG          ?= 3
SAMPLE_OUT   ?= $(RUNS)/samples/sample.png
DEMO_PROMPTS ?= "a red circle" "a blue square on a yellow background" "two green triangles" "a small purple star to the left of a large orange ring"
# Directories of config files layered over the stages' own, in order (LightningCLI merges --config files
# in order, the command line's flags last): `make demo-quick` sets it to stages/quick, whose files
# shorten every stage it trains; `make demo-real` to "stages/paper stages/real" (the study's configs,
# then a shrink to CPU size).
STAGE_OVERLAY ?=
overlay = $(foreach dir,$(STAGE_OVERLAY),--config $(dir)/$(1).yaml)
TRAINER_FLAGS = --trainer.accelerator $(ACCELERATOR) --trainer.devices $(DEVICES)
# Numeric precision of the stages `make demo` trains in bf16 where it pays (the decoder, CLIP, upsampler,
# score model, captioner, judge) and of every command that samples with a U-Net. `auto` is decided in
# Python from the accelerator actually used (t2i_lightning/accelerator.py: bf16-mixed on a GPU or CPU that
# computes bfloat16 natively, else 32-true); set PRECISION=32-true or bf16-mixed to choose. The
# translator, the text decoder and embedding extraction keep their configs' float32.
PRECISION    ?= auto

.PHONY: help install data inspect clip embed probe-layout train-translator embed-text train-decoder evaluate-decoder train-decoder-text train-autoencoder encode-latents train-decoder-latent train-decoder-text-latent train-upsampler evaluate-upsampler train-score train-captioner sample-score evaluate-guidance judge evaluate sample demo-samples demo demo-quick demo-real real-chain test test-all bench bench-gpu lint tensorboard clean

help: ## list the targets (this message)
	@echo "t2i_lightning: staged text-to-image diffusion with PyTorch Lightning"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@PYTHONPATH=. $(PYTHON_SYS) -m t2i_lightning.registry
	@echo
	@echo "Variables (override as VAR=value): DATA=$(DATA) RUNS=$(RUNS) ACCELERATOR=$(ACCELERATOR) DEVICES=$(DEVICES)"
	@echo "  WORKERS=$(WORKERS) SEED=$(SEED) SIZE=$(SIZE) TRAIN_N=$(TRAIN_N) VAL_N=$(VAL_N) TEST_N=$(TEST_N) POSITION_PROB=$(POSITION_PROB)"
	@echo "  PRECISION=$(PRECISION) (auto: bf16-mixed where the accelerator computes bf16 natively, else 32-true)"
	@echo "  STAGE_OVERLAY=$(STAGE_OVERLAY) (config files layered over each stage's own, e.g. stages/quick; make demo-quick sets it)"
	@echo "  TEST_WORKERS=$(TEST_WORKERS) (make test's pytest processes, one thread each)"

install: $(STAMP) ## create .venv (if missing) and install the package with dev extras

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

data: install ## generate the embedded "shapes" dataset as WebDataset shards under $(DATA)
	$(T2I) data shapes --out $(DATA) --train $(TRAIN_N) --val $(VAL_N) --test $(TEST_N) \
	    --size $(SIZE) --seed $(SEED) --workers $(WORKERS) $(if $(strip $(POSITION_PROB)),--position-prob $(POSITION_PROB),)

inspect: install ## print counts and captions of $(DATA) and write a grid to $(RUNS)/demo/shapes_grid.png
	$(T2I) data inspect $(DATA) --out $(RUNS)/demo/shapes_grid.png

# Stages are file targets chained by their outputs: each runs only when what it reads is newer
# than what it wrote, so a second `make demo` redoes nothing. A stage's stamp is touched only
# after it finished; `make -B <target>` (or deleting its run directory) forces a rerun.
CLIP_DONE       := $(RUNS)/clip/done.stamp
TRANSLATOR_DONE := $(RUNS)/translator/done.stamp
DECODER_DONE    := $(RUNS)/decoder/done.stamp
DECODER_TEXT_DONE := $(RUNS)/decoder_text/done.stamp
UPSAMPLER_DONE  := $(RUNS)/upsampler/done.stamp
SCORE_DONE      := $(RUNS)/score/done.stamp
CAPTIONER_DONE  := $(RUNS)/captioner/done.stamp
JUDGE_DONE      := $(RUNS)/judge/done.stamp
AUTOENCODER_DONE := $(RUNS)/autoencoder/done.stamp
DECODER_LATENT_DONE := $(RUNS)/decoder_latent/done.stamp
DECODER_TEXT_LATENT_DONE := $(RUNS)/decoder_text_latent/done.stamp

$(DATA)/index.json: | $(STAMP)
	$(MAKE) --no-print-directory data

clip: $(if $(strip $(CLIP)),,$(CLIP_DONE)) ## train the project's CLIP on $(DATA) -> $(CLIP_CKPT) (skipped when CLIP names pretrained weights)
	@$(if $(strip $(CLIP)),echo "CLIP=$(CLIP) names pretrained $(CLIP_MODEL) weights: nothing to train",true)

$(CLIP_DONE): $(DATA)/index.json | $(STAMP)
	$(T2I) fit --config stages/clip.yaml $(call overlay,clip) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) --trainer.logger.init_args.save_dir $(RUNS) \
	    --model.init_args.model_name $(CLIP_MODEL) --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	@touch $@

embed: $(EMB)/stats.json ## extract CLIP image/text embeddings of $(DATA) -> $(EMB) (resumable)

$(EMB)/stats.json: $(DATA)/index.json $(if $(strip $(CLIP)),,$(CLIP_DONE)) | $(STAMP)
	$(T2I) predict --config stages/embed.yaml $(TRAINER_FLAGS) --trainer.default_root_dir $(RUNS)/embed --model.init_args.model_name $(CLIP_MODEL) \
	    --model.init_args.pretrained $(CLIP_WEIGHTS) --model.init_args.out $(EMB) \
	    --model.init_args.replace_other_clip true --data.init_args.predict $(DATA)

probe-layout: $(RUNS)/clip/layout_probe.json ## how much of each shapes scene (kind and colour per cell, background) the image embeddings in $(EMB) hold -> $(RUNS)/clip/layout_probe.json

$(RUNS)/clip/layout_probe.json: $(EMB)/stats.json | $(STAMP)
	$(T2I) probe-layout --emb $(EMB) --out $@

train-translator: $(TRANSLATOR_DONE) ## train the translator on $(EMB) -> $(TRANSLATOR_CKPT)

$(TRANSLATOR_DONE): $(EMB)/stats.json | $(STAMP)
	$(T2I) fit --config stages/translator.yaml $(call overlay,translator) $(TRAINER_FLAGS) --trainer.logger.init_args.save_dir $(RUNS) \
	    --model.init_args.stats $(EMB)/stats.json --data.init_args.train $(EMB) --data.init_args.val $(EMB) \
	    --model.init_args.net.init_args.in_dim $(EMB_DIM) --model.init_args.net.init_args.out_dim $(EMB_DIM)
	@touch $@

embed-text: $(TRANSLATOR_DONE) ## show PROMPT's translated image embedding and its nearest validation images
	$(T2I) embed-text "$(PROMPT)" --translator $(TRANSLATOR_CKPT) --emb $(EMB)

train-decoder: $(DECODER_DONE) ## train the 64px decoder on $(DATA) + $(EMB) -> $(DECODER_CKPT) (grids in $(RUNS)/decoder/samples/)

# The decoder's prompt grids go through the translator, so it is trained first.
$(DECODER_DONE): $(EMB)/stats.json $(TRANSLATOR_DONE) | $(STAMP)
	$(T2I) fit --config stages/decoder.yaml $(call overlay,decoder) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) \
	    --trainer.logger.init_args.save_dir $(RUNS) --model.init_args.conditioning.init_args.stats $(EMB)/stats.json --model.init_args.samples.init_args.translator $(TRANSLATOR_CKPT) \
	    --data.init_args.embeddings $(EMB) --data.init_args.train $(DATA) --data.init_args.val $(DATA) \
	    --model.init_args.net.init_args.cond_dim $(EMB_DIM)
	@touch $@

evaluate-decoder: $(DECODER_DONE) ## colour/object scores of the decoder's reconstructions of validation images -> $(RUNS)/decoder/reconstructions.json
	$(T2I) evaluate-decoder --decoder $(DECODER_CKPT) --embeddings $(EMB) --data $(DATA) --precision $(PRECISION) $(EVAL_DECODER_FLAGS)

train-decoder-text: $(DECODER_TEXT_DONE) ## train the Imagen-like decoder (text tokens of the CLIP) on $(DATA) -> $(DECODER_TEXT_CKPT)

# Conditioned on the CLIP's text tower directly: needs the CLIP and the image shards, no embeddings.
$(DECODER_TEXT_DONE): $(DATA)/index.json $(if $(strip $(CLIP)),,$(CLIP_DONE)) | $(STAMP)
	$(T2I) fit --config stages/decoder_text.yaml $(call overlay,decoder_text) $(TRAINER_FLAGS) --trainer.logger.init_args.save_dir $(RUNS) \
	    --model.init_args.conditioning.init_args.text_encoder.init_args.model_name $(CLIP_MODEL) \
	    --model.init_args.conditioning.init_args.text_encoder.init_args.pretrained $(CLIP_WEIGHTS) \
	    --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	@touch $@

train-autoencoder: $(AUTOENCODER_DONE) ## train the latent route's autoencoder on $(DATA) -> $(AUTOENCODER_CKPT) (grids in $(RUNS)/autoencoder/samples/)

$(AUTOENCODER_DONE): $(DATA)/index.json | $(STAMP)
	$(T2I) fit --config stages/autoencoder.yaml $(call overlay,autoencoder) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) \
	    --trainer.logger.init_args.save_dir $(RUNS) --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	@touch $@

encode-latents: $(LATENTS)/stats.json ## encode $(DATA) with the autoencoder -> latent shards in $(LATENTS) (resumable)

$(LATENTS)/stats.json: $(DATA)/index.json $(AUTOENCODER_DONE) | $(STAMP)
	$(T2I) predict --config stages/encode_latents.yaml $(TRAINER_FLAGS) --trainer.default_root_dir $(RUNS)/encode \
	    --model.init_args.autoencoder $(AUTOENCODER_CKPT) --model.init_args.out $(LATENTS) \
	    --model.init_args.replace_other_autoencoder true --data.init_args.predict $(DATA)

train-decoder-latent: $(DECODER_LATENT_DONE) ## train the unCLIP decoder on the latents $(LATENTS) + $(EMB) -> $(DECODER_LATENT_CKPT)

$(DECODER_LATENT_DONE): $(LATENTS)/stats.json $(EMB)/stats.json $(TRANSLATOR_DONE) | $(STAMP)
	$(T2I) fit --config stages/decoder_latent.yaml $(call overlay,decoder_latent) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) \
	    --trainer.logger.init_args.save_dir $(RUNS) --model.init_args.conditioning.init_args.stats $(EMB)/stats.json \
	    --model.init_args.space.init_args.stats $(LATENTS)/stats.json --model.init_args.space.init_args.autoencoder $(AUTOENCODER_CKPT) \
	    --model.init_args.samples.init_args.translator $(TRANSLATOR_CKPT) --data.init_args.latents $(LATENTS) \
	    --data.init_args.embeddings $(EMB) --data.init_args.train $(DATA) --data.init_args.val $(DATA) \
	    --model.init_args.net.init_args.cond_dim $(EMB_DIM)
	@touch $@

train-decoder-text-latent: $(DECODER_TEXT_LATENT_DONE) ## train the text-conditioned decoder on the latents $(LATENTS) -> $(DECODER_TEXT_LATENT_CKPT)

$(DECODER_TEXT_LATENT_DONE): $(LATENTS)/stats.json $(if $(strip $(CLIP)),,$(CLIP_DONE)) | $(STAMP)
	$(T2I) fit --config stages/decoder_text_latent.yaml $(call overlay,decoder_text_latent) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) \
	    --trainer.logger.init_args.save_dir $(RUNS) \
	    --model.init_args.conditioning.init_args.text_encoder.init_args.model_name $(CLIP_MODEL) \
	    --model.init_args.conditioning.init_args.text_encoder.init_args.pretrained $(CLIP_WEIGHTS) \
	    --model.init_args.space.init_args.stats $(LATENTS)/stats.json --model.init_args.space.init_args.autoencoder $(AUTOENCODER_CKPT) \
	    --data.init_args.latents $(LATENTS) --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	@touch $@

train-upsampler: $(UPSAMPLER_DONE) ## train the 64->256 upsampler on $(DATA) -> $(UPSAMPLER_CKPT) (grids in $(RUNS)/upsampler/samples/)

# Conditioned on the low-resolution image only (by default): needs the image shards, nothing else.
$(UPSAMPLER_DONE): $(DATA)/index.json | $(STAMP)
	$(T2I) fit --config stages/upsampler.yaml $(call overlay,upsampler) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) --trainer.logger.init_args.save_dir $(RUNS) \
	    --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	@touch $@

evaluate-upsampler: $(UPSAMPLER_DONE) ## PSNR/SSIM/sharpness/time of the upsampler vs bicubic on validation images -> $(RUNS)/upsampler/report.json
	$(T2I) evaluate-upsampler --upsampler $(UPSAMPLER_CKPT) --data $(DATA) --precision $(PRECISION) --out $(RUNS)/upsampler/report.json

train-score: $(SCORE_DONE) ## train the NCSN score model (32px, unconditional) on $(DATA) -> $(SCORE_CKPT)

$(SCORE_DONE): $(DATA)/index.json | $(STAMP)
	$(T2I) fit --config stages/score.yaml $(call overlay,score) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) --trainer.logger.init_args.save_dir $(RUNS) \
	    --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	@touch $@

train-captioner: $(CAPTIONER_DONE) ## train the noise-conditioned captioner on $(DATA) -> $(CAPTIONER_CKPT)

$(CAPTIONER_DONE): $(DATA)/index.json | $(STAMP)
	$(T2I) fit --config stages/captioner.yaml $(call overlay,captioner) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) --trainer.logger.init_args.save_dir $(RUNS) \
	    --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	@touch $@

judge: $(JUDGE_DONE) ## train the evaluation's judge on $(DATA) -> $(JUDGE_CKPT), then print its per-attribute validation accuracy

$(JUDGE_DONE): $(DATA)/index.json | $(STAMP)
	$(T2I) fit --config stages/judge.yaml $(call overlay,judge) $(TRAINER_FLAGS) --trainer.precision $(PRECISION) --trainer.logger.init_args.save_dir $(RUNS) \
	    --data.init_args.train $(DATA) --data.init_args.val $(DATA)
	$(T2I) validate --config stages/judge.yaml $(TRAINER_FLAGS) --trainer.logger.init_args.save_dir $(RUNS) \
	    --data.init_args.val $(DATA) --ckpt_path $(JUDGE_CKPT)
	@touch $@

evaluate: $(JUDGE_DONE) $(EMB)/stats.json | $(STAMP) ## the evaluation table of every variant whose checkpoints exist -> $(RUNS)/eval/table.md (EVAL_FLAGS: more options, e.g. --n 100)
	$(T2I) evaluate --config stages/evaluate.yaml --data $(DATA) --embeddings $(EMB) --clip $(CLIP_WEIGHTS) \
	    --clip-model $(CLIP_MODEL) --translator $(TRANSLATOR_CKPT) --decoder $(DECODER_CKPT) \
	    --upsampler $(UPSAMPLER_CKPT) --decoder-text $(DECODER_TEXT_CKPT) --score $(SCORE_CKPT) \
	    --captioner $(CAPTIONER_CKPT) --decoder-latent $(DECODER_LATENT_CKPT) --decoder-text-latent $(DECODER_TEXT_LATENT_CKPT) \
	    --autoencoder $(AUTOENCODER_CKPT) \
	    --judge $(JUDGE_CKPT) --precision $(PRECISION) --out $(RUNS)/eval $(EVAL_FLAGS)

sample-score: $(SCORE_DONE) $(CAPTIONER_DONE) ## unguided and captioner-guided (GUIDANCE) score-model samples of DEMO_PROMPTS (a row each) -> $(RUNS)/demo/score-*.png
	$(T2I) sample --method score --prompt "$(PROMPT)" --guidance 0 --n $(N) --score $(SCORE_CKPT) \
	    --out $(RUNS)/demo/score-unguided.png
	$(T2I) sample --method score --prompt $(DEMO_PROMPTS) --guidance $(GUIDANCE) --n $(N) --score $(SCORE_CKPT) \
	    --captioner $(CAPTIONER_CKPT) --out $(RUNS)/demo/score-guided.png

evaluate-guidance: $(SCORE_DONE) $(CAPTIONER_DONE) ## prompt-colour match of score samples, unguided vs guided -> $(RUNS)/score/guidance.json
	$(T2I) evaluate-guidance --score $(SCORE_CKPT) --captioner $(CAPTIONER_CKPT) --out $(RUNS)/score/guidance.json

# The upsampler is used when its checkpoint exists (256px out), else the images stay at 64px.
UPSAMPLE_FLAGS = $(if $(wildcard $(UPSAMPLER_CKPT)),--upsampler $(UPSAMPLER_CKPT),--no-upsample)

# The demo's main route is the unCLIP decoder in the autoencoder's latent space: at the pixel decoder's training
# time it draws more of what captions say than the pixel and the text-conditioned routes (docs/experiments.md).
sample: $(DECODER_LATENT_DONE) ## draw N images for PROMPT (SAMPLER, STEPS, CFG) with the latent unCLIP decoder -> $(SAMPLE_OUT), upsampled when an upsampler exists
	$(T2I) sample --prompt "$(PROMPT)" --n $(N) --sampler $(SAMPLER) --steps $(STEPS) --cfg $(CFG) --precision $(PRECISION) \
	    --decoder $(DECODER_LATENT_CKPT) --translator $(TRANSLATOR_CKPT) $(UPSAMPLE_FLAGS) --out $(SAMPLE_OUT)

demo-samples: $(DECODER_LATENT_DONE) $(UPSAMPLER_DONE) ## N samples of each DEMO_PROMPTS caption by the latent unCLIP decoder (a row each), 256px -> $(RUNS)/demo/prompts.png
	$(T2I) sample --prompt $(DEMO_PROMPTS) --n $(N) --steps $(STEPS) --cfg $(CFG) --precision $(PRECISION) --decoder $(DECODER_LATENT_CKPT) \
	    --translator $(TRANSLATOR_CKPT) --upsampler $(UPSAMPLER_CKPT) --out $(RUNS)/demo/prompts.png

# The main route first (CLIP, translator, autoencoder, latent decoder, upsampler, its grids), then the
# routes it is compared with (pixel decoder, text latent decoder, score model), then the evaluation.
demo: data inspect clip embed probe-layout train-translator embed-text train-autoencoder encode-latents train-decoder-latent train-upsampler demo-samples train-decoder train-decoder-text-latent train-score train-captioner sample-score judge evaluate ## the whole pipeline that exists so far, on the embedded data

# The same targets, each stage shortened by stages/quick/ and trained on a 5,000-image dataset, in
# their own DATA and RUNS (so the full demo's results stay untouched); its stage times go to
# $(QUICK_RUNS)/bench/stages.jsonl (`make bench RUNS=$(QUICK_RUNS) DATA=$(QUICK_DATA)` sums them).
QUICK_DATA   ?= data/shapes-quick
QUICK_RUNS   ?= runs/quick
QUICK_EVAL_FLAGS ?= --n 10 --seeds 0 --subset-sizes 5 10 --variants real full decoder_only no_translator full_256 score_guided_3 \
                    autoencoder full_latent decoder_only_latent text_decoder_latent

demo-quick: ## the whole pipeline in about 20 minutes on 2 cores with bf16: every stage shortened (stages/quick/), 5,000 training images -> $(QUICK_RUNS)
	$(MAKE) --no-print-directory demo DATA=$(QUICK_DATA) RUNS=$(QUICK_RUNS) TRAIN_N=5000 VAL_N=500 TEST_N=500 \
	    STAGE_OVERLAY=stages/quick N=2 EVAL_FLAGS="$(QUICK_EVAL_FLAGS)" T2I_TIMINGS=$(abspath $(QUICK_RUNS))/bench/stages.jsonl

# The real user's path, on CPU in minutes: COCO-format photos (default: the 79 COCO validation photos of
# ../shared/data/coco-val-mini, carved into train/val/test by image id) -> a CLIP of a pretrained
# architecture (CLIP_MODEL, default ViT-B-32; CLIP= a local weights file; without one a RANDOM-weight
# CLIP is written and every number is a path check, said in the output and the table) -> extraction ->
# the study's translator and decoder (stages/paper/) shrunk by stages/real/ -> `t2i sample` -> the
# evaluation on the real photos (no judge; INCEPTION= a local Inception state dict for FID/IS/KID/P/R)
# -> $(REAL_RUNS)/eval/table.md. With real weights, the full data and REAL_OVERLAY=stages/paper on a GPU
# it is the study's run.
REAL_IMAGES   ?= ../shared/data/coco-val-mini/val2017
REAL_CAPTIONS ?= ../shared/data/coco-val-mini/annotations/captions_val2017.json
REAL_DATA     ?= data/real
REAL_RUNS     ?= runs/real
REAL_OVERLAY  ?= stages/paper stages/real
REAL_N        ?= 16
REAL_PROMPTS  ?= "a man riding a horse" "a bowl of fruit on a table"
INCEPTION     ?=
REAL_CLIP_MODEL := $(if $(filter command line environment,$(origin CLIP_MODEL)),$(CLIP_MODEL),ViT-B-32)
REAL_CLIP       := $(if $(strip $(CLIP)),$(CLIP),$(REAL_RUNS)/clip/$(REAL_CLIP_MODEL)-random.safetensors)

demo-real: install ## the real user's path on CPU in minutes: COCO photos, a ViT-B-32 CLIP (CLIP= weights file, else random: a path check), the paper translator and decoder shrunk, sampling, evaluation -> $(REAL_RUNS)/eval/table.md
	@$(if $(strip $(CLIP)),true,echo "*** PATH CHECK: no CLIP= weights file given: a RANDOM-weight $(REAL_CLIP_MODEL) is used; every number below checks that the path runs, none is a result ***")
	$(MAKE) --no-print-directory $(REAL_DATA)/index.json $(REAL_CLIP)
	$(MAKE) --no-print-directory real-chain DATA=$(REAL_DATA) RUNS=$(REAL_RUNS) CLIP_MODEL=$(REAL_CLIP_MODEL) CLIP=$(REAL_CLIP) \
	    STAGE_OVERLAY="$(REAL_OVERLAY)"

$(REAL_DATA)/index.json: | $(STAMP)
	$(T2I) data coco --images "$(REAL_IMAGES)" --captions "$(REAL_CAPTIONS)" --out $(REAL_DATA) --split train --part 0:0.6
	$(T2I) data coco --images "$(REAL_IMAGES)" --captions "$(REAL_CAPTIONS)" --out $(REAL_DATA) --split val --part 0.6:0.8
	$(T2I) data coco --images "$(REAL_IMAGES)" --captions "$(REAL_CAPTIONS)" --out $(REAL_DATA) --split test --part 0.8:1

$(REAL_RUNS)/clip/%-random.safetensors: | $(STAMP)
	$(T2I) random-clip --model $* --out $@

# demo-real's chain, with DATA, RUNS, CLIP_MODEL, CLIP and STAGE_OVERLAY set to the real ones.
real-chain: embed train-translator train-decoder
	$(T2I) sample --prompt $(REAL_PROMPTS) --n 2 --steps 10 --no-upsample --decoder $(DECODER_CKPT) --translator $(TRANSLATOR_CKPT) \
	    --clip $(CLIP) --precision $(PRECISION) --out $(RUNS)/samples.png
	$(T2I) evaluate --data $(DATA) --embeddings $(EMB) --split val --real-split test --n $(REAL_N) --seeds 0 \
	    --subset-sizes $(REAL_N) --variants real full decoder_only no_translator --clip $(CLIP) --clip-model $(CLIP_MODEL) \
	    --translator $(TRANSLATOR_CKPT) --decoder $(DECODER_CKPT) --steps 10 --batch-size 16 --precision $(PRECISION) \
	    $(if $(strip $(INCEPTION)),--inception-weights $(INCEPTION),) --out $(RUNS)/eval

# The tests run in TEST_WORKERS processes (pytest-xdist), a test file per process so that a file's fixtures are
# built once; each process and the commands it runs use one thread (OMP_NUM_THREADS=1): two processes of two
# threads on two cores spend most of their time waiting on each other's spinning threads. The fifteen slowest
# tests are listed at the end, so that a suite creeping past CI's ~15 minutes shows where to trim.
TEST_WORKERS ?= 2
PYTEST       = T2I_TIMINGS= OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test: install ## run the fast test suite (what CI runs), in TEST_WORKERS processes
	$(PYTEST) $(PYTEST_ARGS)

test-all: install ## run every test, the slow ones included
	$(PYTEST) -m "slow or not slow" $(PYTEST_ARGS)

bench: $(DATA)/index.json | $(STAMP) ## benchmarks as side-by-side ratios, plus the demo's stage times and memory -> $(RUNS)/bench/bench.json (BENCH_FLAGS=--quick: smoke test)
	T2I_TIMINGS= $(T2I) bench --out $(RUNS)/bench/bench.json --data $(DATA) --clip-model $(CLIP_MODEL) \
	    --stage-log $(T2I_TIMINGS) $(if $(wildcard $(CLIP_WEIGHTS)),--clip $(CLIP_WEIGHTS),) \
	    $(if $(wildcard $(DECODER_CKPT)),--decoder $(DECODER_CKPT) --embeddings $(EMB),) $(BENCH_FLAGS)

bench-gpu: $(DATA)/index.json | $(STAMP) ## the bench's GPU rows (decoder step img/s and bf16 MFU, demo and paper configs; sampling; extraction) -> $(RUNS)/bench/gpu.json
	T2I_TIMINGS= $(T2I) bench gpu --out $(RUNS)/bench/gpu.json --data $(DATA) $(BENCH_FLAGS)

lint: install ## ruff check
	$(VENV)/bin/ruff check .

tensorboard: install ## serve TensorBoard over $(RUNS)
	$(VENV)/bin/tensorboard --logdir $(RUNS)

clean: ## remove runs, caches and build metadata (keeps .venv and data)
	rm -rf $(RUNS) lightning_logs .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
