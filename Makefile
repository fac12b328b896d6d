# fm — build, test and sanitizer targets. Plain make; no configure step.
#   make            the library (build/libfm.a) and the fm command (build/fm)
#   make test       every unit, gradient, parity and CLI test (needs libcmocka-dev, libcjson-dev)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-torch regenerate the PyTorch reference with /usr/bin/python3 and check it live

CC      = gcc
BUILD  ?= build
OPT    ?= -O3 -march=native
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -ffp-contract=fast -Wall -Wextra -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -fopenmp -Iinclude -Isrc
LDLIBS  = -lcjson -lm -fopenmp
PYTHON ?= /usr/bin/python3

LIB_SRC  = $(wildcard src/*.c src/cpu/*.c)
CLI_SRC  = $(wildcard cli/*.c)
TEST_SRC = $(wildcard tests/test_*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test asan test-torch clean
all: $(BUILD)/fm

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*.h src/cpu/*.h cli/*.h tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libfm.a: $(LIB_OBJ)
	ar rcs $@ $^

$(BUILD)/fm: $(CLI_OBJ) $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libfm.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

# Runs every test binary from the repository root; fails if any fails, after running all.
test: $(TESTS) $(BUILD)/fm
	@failed=0; for t in $(TESTS); do \
	    echo "== $$t"; FM=$(BUILD)/fm ./$$t || failed=$$((failed + 1)); \
	done; \
	echo "test binaries failed: $$failed of $(words $(TESTS))"; [ $$failed -eq 0 ]

asan:
	$(MAKE) test BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"

# Regenerates tests/ref/tiny from a fresh fm initialisation with PyTorch, then runs the parity test.
test-torch: $(BUILD)/fm $(BUILD)/tests/test_parity
	$(BUILD)/fm init --out $(BUILD)/torch-ref --layers 2 --dim 48 --heads 3 --vocab 97 --context 32 --seed 1337
	OPENBLAS_CORETYPE=SkylakeX $(PYTHON) tests/torch/gpt2_reference.py $(BUILD)/torch-ref $(BUILD)/torch-ref/reference.safetensors
	FM_PARITY_DIR=$(BUILD)/torch-ref ./$(BUILD)/tests/test_parity

clean:
	rm -rf build build-asan
