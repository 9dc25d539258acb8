// `llmc tokenize MODEL (--text S | --file F) [--json] [--no-special]`: prints the token ids of a text, as
// Hugging Face tokenizers gives them for MODEL's tokenizer.json.
#pragma once

#include <string>

namespace llmc::cli {

struct TokenizeArgs {
  std::string model;        // a model directory with tokenizer.json, or the path of a tokenizer.json
  std::string text;         // the text to tokenize, or
  std::string file;         // a UTF-8 file whose whole content is tokenized
  bool json = false;        // print {"ids":[...]} instead of space-separated ids
  bool no_special = false;  // leave out the special tokens (e.g. BOS) the tokenizer adds by default
};

// Prints the ids on stdout and returns 0; on failure prints one line `llmc: error: ...` on stderr and
// returns 1.
int RunTokenizeCommand(const TokenizeArgs& args);

}  // namespace llmc::cli
