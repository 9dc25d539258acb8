#include "storage/s3_xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <memory>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace llmc::storage {

namespace {

struct DocDeleter {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
using DocPtr = std::unique_ptr<xmlDoc, DocDeleter>;

DocPtr ParseXml(absl::string_view body) {
  static std::once_flag once;
  std::call_once(once, [] { xmlInitParser(); });
  if (body.empty() || body.size() > (256u << 20)) return nullptr;
  // No network, no DTD loading, no entity substitution; errors are not printed.
  int flags = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
  return DocPtr(xmlReadMemory(body.data(), static_cast<int>(body.size()), "s3.xml", nullptr, flags));
}

bool NameIs(const xmlNode* n, absl::string_view name) {
  return n && n->type == XML_ELEMENT_NODE && n->name &&
         absl::string_view(reinterpret_cast<const char*>(n->name)) == name;
}

std::string Text(const xmlNode* n) {
  std::string out;
  for (const xmlNode* c = n->children; c; c = c->next) {
    if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content)
      out += reinterpret_cast<const char*>(c->content);
    else if (c->type == XML_ENTITY_REF_NODE && c->children)
      out += Text(c);  // predefined entities are already text; be lenient with others
  }
  return out;
}

const xmlNode* Child(const xmlNode* n, absl::string_view name) {
  for (const xmlNode* c = n->children; c; c = c->next)
    if (NameIs(c, name)) return c;
  return nullptr;
}

std::string ChildText(const xmlNode* n, absl::string_view name) {
  const xmlNode* c = Child(n, name);
  return c ? Text(c) : std::string();
}

std::string Snippet(absl::string_view body) {
  std::string s(body.substr(0, 200));
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

absl::Status Malformed(absl::string_view what, absl::string_view body) {
  return absl::InternalError(absl::StrCat("unexpected ", what, " answer from the S3 server: '", Snippet(body),
                                          body.size() > 200 ? "...'" : "'"));
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Form decoding as S3's encoding-type=url uses it ('+' is a space).
std::string UrlDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::string StripQuotes(absl::string_view etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  return std::string(etag);
}

std::string XmlEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      case '\r': out += "&#13;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::optional<S3Error> ParseS3Error(absl::string_view body) {
  DocPtr doc = ParseXml(body);
  if (!doc) return std::nullopt;
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (!NameIs(root, "Error")) return std::nullopt;
  S3Error e;
  e.code = ChildText(root, "Code");
  e.message = ChildText(root, "Message");
  e.resource = ChildText(root, "Resource");
  e.request_id = ChildText(root, "RequestId");
  e.region = ChildText(root, "Region");
  e.endpoint = ChildText(root, "Endpoint");
  return e;
}

absl::StatusOr<ListResult> ParseListObjectsV2(absl::string_view body) {
  DocPtr doc = ParseXml(body);
  const xmlNode* root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
  if (!NameIs(root, "ListBucketResult")) return Malformed("ListObjectsV2", body);
  bool url = absl::AsciiStrToLower(ChildText(root, "EncodingType")) == "url";
  ListResult out;
  for (const xmlNode* c = root->children; c; c = c->next) {
    if (!NameIs(c, "Contents")) continue;
    ObjectInfo o;
    const xmlNode* key = Child(c, "Key");
    if (!key) return Malformed("ListObjectsV2 (an entry without <Key>)", body);
    o.key = url ? UrlDecode(Text(key)) : Text(key);
    std::string size = ChildText(c, "Size");
    if (!size.empty() && !absl::SimpleAtoi(size, &o.size)) return Malformed("ListObjectsV2 (bad <Size>)", body);
    o.etag = StripQuotes(ChildText(c, "ETag"));
    out.objects.push_back(std::move(o));
  }
  bool truncated = absl::AsciiStrToLower(ChildText(root, "IsTruncated")) == "true";
  if (truncated) {
    out.next_token = ChildText(root, "NextContinuationToken");
    if (out.next_token.empty()) return Malformed("ListObjectsV2 (truncated without NextContinuationToken)", body);
  }
  return out;
}

absl::StatusOr<std::string> ParseInitiateMultipartUpload(absl::string_view body) {
  DocPtr doc = ParseXml(body);
  const xmlNode* root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
  if (!NameIs(root, "InitiateMultipartUploadResult")) return Malformed("CreateMultipartUpload", body);
  std::string id = ChildText(root, "UploadId");
  if (id.empty()) return Malformed("CreateMultipartUpload (no UploadId)", body);
  return id;
}

absl::StatusOr<std::string> ParseResultETag(absl::string_view body, absl::string_view root_name) {
  DocPtr doc = ParseXml(body);
  const xmlNode* root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
  // moto names the CompleteMultipartUpload root ...Response; accept any root that starts with the expected name.
  if (!root || !root->name ||
      absl::string_view(reinterpret_cast<const char*>(root->name)).substr(0, root_name.size()) != root_name)
    return Malformed(root_name, body);
  return ChildText(root, "ETag");
}

absl::StatusOr<std::vector<S3DeleteFailure>> ParseDeleteResult(absl::string_view body) {
  DocPtr doc = ParseXml(body);
  const xmlNode* root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
  if (!NameIs(root, "DeleteResult")) return Malformed("DeleteObjects", body);
  std::vector<S3DeleteFailure> out;
  for (const xmlNode* c = root->children; c; c = c->next) {
    if (!NameIs(c, "Error")) continue;
    out.push_back({ChildText(c, "Key"), ChildText(c, "Code"), ChildText(c, "Message")});
  }
  return out;
}

std::string CompleteMultipartUploadXml(const std::vector<CompletedPart>& parts) {
  std::string out = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
  for (const auto& p : parts)
    absl::StrAppend(&out, "<Part><PartNumber>", p.part_number, "</PartNumber><ETag>", XmlEscape(p.etag),
                    "</ETag></Part>");
  out += "</CompleteMultipartUpload>";
  return out;
}

std::string DeleteObjectsXml(const std::vector<std::string>& keys) {
  std::string out = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>";
  for (const auto& k : keys) absl::StrAppend(&out, "<Object><Key>", XmlEscape(k), "</Key></Object>");
  out += "</Delete>";
  return out;
}

}  // namespace llmc::storage
