// Checks SentencePiece leaves to the caller. SentencePiece (Debian's 0.1.97) trusts the
// normalization tables stored in a model: a darts-clone double array and the replacement
// strings it points into. A damaged table parses fine and then makes every encode read out of
// bounds (found by fuzz_spm: a segfault in Normalizer::NormalizePrefix). Vocab checks every
// model with this before SentencePiece loads it.
#pragma once

#include <string>
#include <string_view>

namespace attn::data {

// Throws attn::Error naming `origin` when a precompiled_charsmap of the model's
// normalizer_spec or denormalizer_spec would be read out of bounds. Bytes that are not a
// ModelProto are left to SentencePiece's parser, which refuses them.
void check_spm_normalizers(std::string_view model_proto, const std::string& origin);

}  // namespace attn::data
