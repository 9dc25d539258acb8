// The S3 XML documents llmc reads and writes: error bodies, ListObjectsV2 pages, multipart upload results,
// copy results, multi-object delete. Parsed with libxml2 (no network access, no entity loading); malformed or
// unexpected documents give INTERNAL errors that quote the start of the body instead of crashing.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/object_store.h"

namespace llmc::storage {

struct S3Error {
  std::string code;        // "NoSuchKey", "AccessDenied", ...
  std::string message;
  std::string resource;
  std::string request_id;
  std::string region;      // <Region> of a redirect or AuthorizationHeaderMalformed answer, if any
  std::string endpoint;    // <Endpoint> of a PermanentRedirect answer, if any
};

// The <Error> document in `body`, or nullopt when `body` is empty, not XML or has another root element.
std::optional<S3Error> ParseS3Error(absl::string_view body);

// A ListObjectsV2 page (<ListBucketResult>). Keys are full keys as the server sent them (URL-decoded when the
// page says <EncodingType>url</EncodingType>); ETags lose their quotes.
absl::StatusOr<ListResult> ParseListObjectsV2(absl::string_view body);

// <InitiateMultipartUploadResult><UploadId>.
absl::StatusOr<std::string> ParseInitiateMultipartUpload(absl::string_view body);

// The <ETag> of a CompleteMultipartUploadResult, CopyObjectResult or CopyPartResult (quotes kept, possibly empty:
// RGW sends an empty one for CompleteMultipartUpload).
absl::StatusOr<std::string> ParseResultETag(absl::string_view body, absl::string_view root);

struct S3DeleteFailure {
  std::string key;
  std::string code;
  std::string message;
};
// The <Error> entries of a <DeleteResult> (multi-object delete), empty when everything was deleted.
absl::StatusOr<std::vector<S3DeleteFailure>> ParseDeleteResult(absl::string_view body);

// The request bodies.
std::string CompleteMultipartUploadXml(const std::vector<CompletedPart>& parts);
std::string DeleteObjectsXml(const std::vector<std::string>& keys);  // quiet mode

// Escapes &, <, >, " and ' for XML text.
std::string XmlEscape(absl::string_view text);
// Strips one pair of surrounding double quotes.
std::string StripQuotes(absl::string_view etag);

}  // namespace llmc::storage
