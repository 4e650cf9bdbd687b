# embroker — one non-recursive Makefile.
#
#   make            build everything (CUDA parts too when nvcc exists)
#   make test       run every test (unit, integration, fuzz smoke); ends with "N passed, N failed"
#   make run        start services, broker and a worker, scan a sample image
#   make bench      benchmarks into bench/results/
#   make gpu-check  build for sm_90, run the CUDA checks and the GPU benchmark
#   make fuzz       run the protocol decoder under libFuzzer (FUZZ_SECONDS, default 60)
#   make format / lint / clean
#
# Variables: SAN=1 (AddressSanitizer + UndefinedBehaviorSanitizer), DEBUG=1 (-O0), V=1 (echo
# commands), NVCC= (empty: skip CUDA even if nvcc exists). Each flavour builds into its own
# folder (build/, build-san/, build-debug/) so switching never mixes objects.
#
# Sources are found by folder: every .c in a component folder is part of that component's
# library, except files named *_main.c, which are programs (see PROGRAMS below).

.SUFFIXES:
.DELETE_ON_ERROR:
.SECONDARY:
SHELL := /bin/bash

ifeq ($(SAN),1)
  B ?= build-san
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDSAN := -fsanitize=address,undefined
else ifeq ($(DEBUG),1)
  B ?= build-debug
  OPT := -O0 -g
else
  B ?= build
  OPT := -O2 -g
endif

ifneq ($(V),1)
  Q := @
endif

CC ?= cc
ifeq ($(CC),cc)
  CC := gcc
endif
NVCC ?= $(shell command -v nvcc 2>/dev/null)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(shell command -v nvcc 2>/dev/null)))

PKGS := libzmq msgpack hiredis libpq openblas libturbojpeg spng libwebp libpcre2-8 libutf8proc \
        libcjson openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

INCLUDES := -Icommon -Ishm -Iclientlib -Ibroker -Igpu_worker -Igpu_worker/cpu -Igpu_worker/cuda \
            -Itools -Ibench -Itests/support
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla \
        -Wno-missing-field-initializers
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE= $(OPT) $(WARN) -fPIC -pthread -MMD -MP $(INCLUDES) \
              $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := -pthread -rdynamic $(LDSAN) $(LDFLAGS)
LDLIBS_ALL := $(PKG_LIBS) -ldl -lm $(LDLIBS)

# ---- components ------------------------------------------------------------------------------
lib_srcs = $(filter-out %_main.c,$(wildcard $(1)/*.c))
objs = $(patsubst %.c,$(B)/obj/%.o,$(1))

COMMON_SRC := $(call lib_srcs,common)
SHM_SRC    := $(call lib_srcs,shm)
CLIENT_SRC := $(call lib_srcs,clientlib)
BROKER_SRC := $(call lib_srcs,broker)
WORKER_SRC := $(call lib_srcs,gpu_worker) $(call lib_srcs,gpu_worker/cpu)
TOOLS_SRC  := $(call lib_srcs,tools)
BENCH_SRC  := $(call lib_srcs,bench)

LIB_COMMON := $(B)/lib/libeb_common.a
LIB_SHM    := $(B)/lib/libeb_shm.a
LIB_CLIENT := $(B)/lib/libembroker.a
LIB_CLIENT_SO := $(B)/lib/libembroker.so
LIB_BROKER := $(B)/lib/libeb_broker.a
LIB_WORKER := $(B)/lib/libeb_worker.a
LIB_TOOLS  := $(B)/lib/libeb_tools.a
LIB_BENCH  := $(B)/lib/libeb_bench.a

# Link order: dependents before what they depend on (common <- shm <- clientlib ...).
ALL_LIBS := $(LIB_BENCH) $(LIB_TOOLS) $(LIB_BROKER) $(LIB_WORKER) $(LIB_CLIENT) $(LIB_SHM) \
            $(LIB_COMMON)

# Programs: name:main-source. A program links every library (archives pull only what is used).
PROGRAM_MAINS := embrokerd:broker/embrokerd_main.c \
                 embroker-worker:gpu_worker/worker_main.c \
                 embroker:clientlib/cli_main.c \
                 embroker-bench:bench/bench_main.c \
                 mkcheckpoint:tools/mkcheckpoint_main.c
PROGRAM_MAINS := $(foreach p,$(PROGRAM_MAINS),$(if $(wildcard $(word 2,$(subst :, ,$(p)))),$(p)))
PROGRAMS := $(foreach p,$(PROGRAM_MAINS),$(B)/bin/$(word 1,$(subst :, ,$(p))))

# Tests: every tests/unit/test_*.c and tests/integration/test_*.c is one program.
TEST_SRCS := $(wildcard tests/unit/test_*.c) $(wildcard tests/integration/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(B)/tests/%,$(TEST_SRCS))
TEST_HELPER_SRC := $(wildcard tests/support/*.c)
TEST_HELPER_OBJ := $(call objs,$(TEST_HELPER_SRC))

# Small helper programs used by integration tests (tests/helpers/*.c, one program each).
HELPER_SRCS := $(wildcard tests/helpers/*.c)
HELPER_BINS := $(patsubst tests/helpers/%.c,$(B)/tests/helpers/%,$(HELPER_SRCS))

# ---- CUDA --------------------------------------------------------------------------------------
CU_SRCS := $(wildcard gpu_worker/cuda/*.cu)
CUDA_LIB := $(B)/lib/libeb_cuda.so
# Matrix products go through cuBLASLt (scripts/setup-cuda fetches it where the toolkit lacks it).
# No cuDNN: patch embedding is im2col + GEMM (gpu_worker/cuda/eb_cuda_patch.cu says why).
CUDA_LINK_LIBS ?= -lcublasLt
# GPU check programs: plain C against the op interface (libeb_cuda.so is dlopen()ed), so they
# build everywhere, CI included, and exit 77 without a GPU. scripts/gpu-check runs them.
GPU_PROGRAM_MAINS := $(foreach p,siglip-compare:tools/siglip_compare_main.c \
                       embroker-gpu-bench:bench/gpu_bench_main.c \
                       qwen3-gpu-bench:tools/qwen3_gpu_bench_main.c,$(if $(wildcard $(word 2,$(subst :, ,$(p)))),$(p)))
PROGRAM_MAINS += $(GPU_PROGRAM_MAINS)
PROGRAMS += $(foreach p,$(GPU_PROGRAM_MAINS),$(B)/bin/$(word 1,$(subst :, ,$(p))))
ifneq ($(strip $(NVCC)),)
ifneq ($(CU_SRCS),)
  # cuBLASLt and cuDNN come with the toolkit on GPU machines; on machines without them
  # scripts/setup fetches the PyPI wheels into var/cuda (headers and libraries).
  CUDA_EXTRA_DIRS := $(wildcard var/cuda/*/include) $(wildcard $(CUDA_HOME)/include)
  CUDA_EXTRA_LIBDIRS := $(wildcard var/cuda/*/lib) $(wildcard $(CUDA_HOME)/lib64)
  NVCCFLAGS := -O3 -std=c++17 -gencode arch=compute_90,code=[sm_90,compute_90] \
               -Xcompiler -fPIC,-Wall,-Wextra,-Werror -Werror all-warnings \
               $(INCLUDES) $(addprefix -I,$(CUDA_EXTRA_DIRS)) $(NVCCFLAGS_EXTRA)
  CUDA_LDLIBS := $(addprefix -L,$(CUDA_EXTRA_LIBDIRS)) $(CUDA_LINK_LIBS) -lcudart
  CU_OBJS := $(patsubst %.cu,$(B)/obj/%.o,$(CU_SRCS))
  ifneq ($(wildcard $(addsuffix /cublasLt.h,$(CUDA_EXTRA_DIRS))),)
    CUDA_TARGETS := $(CUDA_LIB)
  else
    # Without cuBLASLt the kernels still compile (CI checks them); the library needs it to link.
    CUDA_TARGETS := $(CU_OBJS)
    $(info note: cublasLt.h not found (run scripts/setup-cuda): CUDA objects built, libeb_cuda.so not linked)
  endif
endif
endif

# ---- rules -------------------------------------------------------------------------------------
.PHONY: all test test-unit run bench gpu-check fuzz format lint clean setup services-start \
        services-stop cuda-note

all: $(PROGRAMS) $(LIB_CLIENT_SO) $(TEST_BINS) $(HELPER_BINS) $(CUDA_TARGETS) cuda-note

cuda-note:
ifeq ($(strip $(NVCC)),)
	@echo "note: nvcc not found: CUDA backend not built (CPU backend only)"
endif

$(B)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(B)/obj/%.o: %.cu
	@mkdir -p $(@D)
	$(if $(Q),@echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

define archive_rule
$(1): $(call objs,$(2))
	@mkdir -p $$(@D)
	$$(if $$(Q),@echo "  AR      $$@")
	$$(Q)rm -f $$@ && ar rcs $$@ $$^
endef
$(eval $(call archive_rule,$(LIB_COMMON),$(COMMON_SRC)))
$(eval $(call archive_rule,$(LIB_SHM),$(SHM_SRC)))
$(eval $(call archive_rule,$(LIB_CLIENT),$(CLIENT_SRC)))
$(eval $(call archive_rule,$(LIB_BROKER),$(BROKER_SRC)))
$(eval $(call archive_rule,$(LIB_WORKER),$(WORKER_SRC)))
$(eval $(call archive_rule,$(LIB_TOOLS),$(TOOLS_SRC)))
$(eval $(call archive_rule,$(LIB_BENCH),$(BENCH_SRC)))

$(LIB_CLIENT_SO): $(call objs,$(CLIENT_SRC) $(SHM_SRC) $(COMMON_SRC))
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) -shared -o $@ $^ $(LDFLAGS_ALL) $(LDLIBS_ALL)

define program_rule
$(B)/bin/$(1): $(call objs,$(2)) $(ALL_LIBS)
	@mkdir -p $$(@D)
	$$(if $$(Q),@echo "  LD      $$@")
	$$(Q)$$(CC) -o $$@ $$< $(ALL_LIBS) $$(LDFLAGS_ALL) $$(LDLIBS_ALL)
endef
$(foreach p,$(PROGRAM_MAINS),$(eval $(call program_rule,$(word 1,$(subst :, ,$(p))),$(word 2,$(subst :, ,$(p))))))

$(B)/tests/%: $(B)/obj/tests/%.o $(TEST_HELPER_OBJ) $(ALL_LIBS)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) -o $@ $< $(TEST_HELPER_OBJ) $(ALL_LIBS) $(LDFLAGS_ALL) $(LDLIBS_ALL) -lcmocka

$(CUDA_LIB): $(CU_OBJS) $(LIB_WORKER) $(LIB_COMMON)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  NVLINK  $@")
	$(Q)$(NVCC) -shared -o $@ $(CU_OBJS) $(CUDA_LDLIBS)

# ---- fuzzing (clang + libFuzzer) ------------------------------------------------------------
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRCS))
FUZZ_LIB_SRC := $(COMMON_SRC)
FUZZ_SECONDS ?= 60
build-fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRC)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  FUZZ    $@")
	$(Q)clang -std=c11 -D_GNU_SOURCE= -g -O1 -fsanitize=fuzzer,address,undefined $(INCLUDES) \
	    $(PKG_CFLAGS) -o $@ $^ $(PKG_LIBS) -lm -ldl -pthread
fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do mkdir -p var/fuzz-corpus/$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_SECONDS) var/fuzz-corpus/$$(basename $$f) tests/fuzz/corpus || exit 1; done
fuzz-build: $(FUZZ_BINS)

# ---- top-level jobs ---------------------------------------------------------------------------
setup:
	@scripts/setup --if-needed

test: setup
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory fuzz-build
	@B=$(B) tests/run

run: setup
	@$(MAKE) --no-print-directory all
	@B=$(B) scripts/run-demo

bench: setup
	@$(MAKE) --no-print-directory all
	@B=$(B) bench/run

gpu-check:
	@B=$(B) scripts/gpu-check

services-start: setup
	@scripts/services start
services-stop:
	@scripts/services stop

format:
	@clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

lint:
	@files=$$(git diff --name-only --diff-filter=AM HEAD -- '*.c' | tr '\n' ' '); \
	 if [ -z "$$files" ]; then echo "lint: no changed C files"; exit 0; fi; \
	 if command -v cppcheck >/dev/null; then cppcheck --quiet --error-exitcode=1 --enable=warning,performance $(INCLUDES) $$files; \
	 else clang-tidy $$files -- $(CFLAGS_ALL); fi

clean:
	rm -rf build build-san build-debug build-fuzz

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
