#include "storage/s3_xml.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace llmc::storage {
namespace {

using ::testing::HasSubstr;

TEST(S3Xml, ErrorDocument) {
  auto e = ParseS3Error(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>The resource &amp; "
      "more</Message><Key>a</Key><RequestId>tx1</RequestId></Error>");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "NoSuchKey");
  EXPECT_EQ(e->message, "The resource & more");
  EXPECT_EQ(e->request_id, "tx1");
  EXPECT_FALSE(ParseS3Error("").has_value());
  EXPECT_FALSE(ParseS3Error("<html>502 Bad Gateway</html>").has_value());
  EXPECT_FALSE(ParseS3Error("not xml at all <<<").has_value());
  EXPECT_FALSE(ParseS3Error("<ListBucketResult/>").has_value());
}

TEST(S3Xml, ListObjectsV2Page) {
  auto page = ParseListObjectsV2(
      "<?xml version=\"1.0\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
      "<NextContinuationToken>tok+/=</NextContinuationToken>"
      "<Contents><Key>p/a &amp; b.txt</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
      "<ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>"
      "<Contents><Key>p/&lt;c&gt;</Key><ETag>\"def-2\"</ETag><Size>17179869184</Size></Contents>"
      "</ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "p/a & b.txt");
  EXPECT_EQ(page->objects[0].size, 12u);
  EXPECT_EQ(page->objects[0].etag, "abc");
  EXPECT_EQ(page->objects[1].key, "p/<c>");
  EXPECT_EQ(page->objects[1].size, 17179869184ull);
  EXPECT_EQ(page->objects[1].etag, "def-2");
  EXPECT_EQ(page->next_token, "tok+/=");
}

TEST(S3Xml, ListObjectsV2UrlEncodedKeys) {
  auto page = ParseListObjectsV2(
      "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
      "<Contents><Key>a+b%2Bc%0A</Key><Size>1</Size></Contents></ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->objects[0].key, "a b+c\n");
  EXPECT_EQ(page->next_token, "");
}

TEST(S3Xml, MalformedListings) {
  EXPECT_THAT(ParseListObjectsV2("").status().message(), HasSubstr("unexpected"));
  EXPECT_FALSE(ParseListObjectsV2("<ListBucketResult><Contents><Key>a</Key>").ok());  // truncated document
  EXPECT_FALSE(ParseListObjectsV2("<Error><Code>x</Code></Error>").ok());
  EXPECT_FALSE(ParseListObjectsV2("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>").ok());
  EXPECT_FALSE(ParseListObjectsV2("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>").ok());
  EXPECT_FALSE(
      ParseListObjectsV2("<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>").ok());
  // An external entity is neither fetched nor expanded.
  auto xxe = ParseListObjectsV2(
      "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
      "<ListBucketResult><Contents><Key>&x;</Key><Size>1</Size></Contents></ListBucketResult>");
  if (xxe.ok()) {
    EXPECT_EQ(xxe->objects[0].key.find("root:"), std::string::npos);
  }
}

TEST(S3Xml, MultipartDocuments) {
  auto id = ParseInitiateMultipartUpload(
      "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>2~abc</UploadId>"
      "</InitiateMultipartUploadResult>");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "2~abc");
  EXPECT_FALSE(ParseInitiateMultipartUpload("<InitiateMultipartUploadResult/>").ok());
  auto etag = ParseResultETag("<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>",
                              "CompleteMultipartUploadResult");
  ASSERT_TRUE(etag.ok());
  EXPECT_EQ(*etag, "\"x-2\"");
  EXPECT_TRUE(ParseResultETag("<CompleteMultipartUploadResponse><ETag></ETag></CompleteMultipartUploadResponse>",
                              "CompleteMultipartUpload")
                  .ok());
  EXPECT_EQ(*ParseResultETag("<CopyPartResult><ETag>&quot;p&quot;</ETag></CopyPartResult>", "CopyPartResult"), "\"p\"");
  EXPECT_EQ(CompleteMultipartUploadXml({{1, "\"a\""}, {2, "\"b\""}}),
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><PartNumber>1</PartNumber>"
            "<ETag>&quot;a&quot;</ETag></Part><Part><PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag></Part>"
            "</CompleteMultipartUpload>");
}

TEST(S3Xml, DeleteDocuments) {
  EXPECT_EQ(DeleteObjectsXml({"a&b", "c"}),
            "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet><Object><Key>a&amp;b</Key>"
            "</Object><Object><Key>c</Key></Object></Delete>");
  auto ok = ParseDeleteResult("<DeleteResult xmlns=\"x\"></DeleteResult>");
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->empty());
  auto failed = ParseDeleteResult(
      "<DeleteResult><Deleted><Key>a</Key></Deleted><Error><Key>b</Key><Code>AccessDenied</Code>"
      "<Message>no</Message></Error></DeleteResult>");
  ASSERT_TRUE(failed.ok());
  ASSERT_EQ(failed->size(), 1u);
  EXPECT_EQ((*failed)[0].key, "b");
  EXPECT_EQ((*failed)[0].code, "AccessDenied");
}

TEST(S3Xml, EscapeAndQuotes) {
  EXPECT_EQ(XmlEscape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;");
  EXPECT_EQ(StripQuotes("\"abc\""), "abc");
  EXPECT_EQ(StripQuotes("abc"), "abc");
  EXPECT_EQ(StripQuotes("\""), "\"");
}

}  // namespace
}  // namespace llmc::storage
