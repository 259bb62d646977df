"""Model layer: resolve the base, build lora/full/head, save and load the trained part."""

import logging

# bitsandbytes (imported by PEFT, so by every method) warns at import on AVX512-BF16 CPUs that it cannot fetch a
# hub kernel for its repacked 4-bit layout. textlora never uses that layout (`quantization.keep_weights_unpacked`)
# and fetches nothing at run time, so the warning only confuses; errors from that module still show.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
