// Small helpers shared by the SVG pictures attn writes by hand (attention heatmaps,
// training curves): no drawing library, just text.
#pragma once

#include <string>

namespace attn::train {

// `s` with &, <, > and " replaced by entities, safe inside SVG text and attribute values.
std::string xml_escape(const std::string& s);

}  // namespace attn::train
