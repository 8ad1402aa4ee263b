//! Serde types of the Alidns RPC API (version 2015-01-09) answers this provider reads,
//! including the vendor's error body, displayed as `Code: Message`.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The error body of every failed call: `{RequestId, HostId, Code, Message, Recommend}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    /// Aliyun's id of the request (quote it to Aliyun support).
    #[serde(rename = "RequestId", default)]
    #[allow(dead_code)] // Kept as evidence in `Debug`.
    pub request_id: String,
    /// The error code, e.g. `SignatureDoesNotMatch`.
    #[serde(rename = "Code", default)]
    pub code: String,
    /// The vendor's explanation.
    #[serde(rename = "Message", default)]
    pub message: String,
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// `AddDomainRecord` → `{RequestId, RecordId}`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct AddDomainRecord {
    /// The new record's id.
    #[serde(rename = "RecordId", deserialize_with = "string_or_number")]
    pub record_id: String,
}

/// `DeleteDomainRecord` → `{RequestId, RecordId}`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct DeleteDomainRecord {
    /// The deleted record's id.
    #[serde(rename = "RecordId", default, deserialize_with = "string_or_number")]
    #[allow(dead_code)] // Only the success matters.
    pub record_id: String,
}

/// `DescribeDomainRecords` → `{TotalCount, PageNumber, PageSize, DomainRecords:{Record:[..]}}`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct DescribeDomainRecords {
    /// Records matching the filter, over all pages.
    #[serde(rename = "TotalCount", default)]
    pub total_count: u64,
    /// This page's records.
    #[serde(rename = "DomainRecords", default)]
    pub domain_records: DomainRecords,
}

/// `{Record: [...]}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct DomainRecords {
    /// The records.
    #[serde(rename = "Record", default)]
    pub record: Vec<Record>,
}

/// One DNS record.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Record {
    /// Its id (a string).
    #[serde(rename = "RecordId", deserialize_with = "string_or_number")]
    pub record_id: String,
    /// The host record, relative to the domain (`_acme-challenge.www`, `@`).
    #[serde(rename = "RR")]
    pub rr: String,
    /// `TXT`, `A`, ...
    #[serde(rename = "Type")]
    pub kind: String,
    /// The record's value.
    #[serde(rename = "Value")]
    pub value: String,
}

/// `DescribeDomains` → `{TotalCount, PageNumber, PageSize, Domains:{Domain:[..]}}`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct DescribeDomains {
    /// Domains in the account, over all pages.
    #[serde(rename = "TotalCount", default)]
    pub total_count: u64,
    /// This page's domains.
    #[serde(rename = "Domains", default)]
    pub domains: Domains,
}

/// `{Domain: [...]}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Domains {
    /// The domains.
    #[serde(rename = "Domain", default)]
    pub domain: Vec<Domain>,
}

/// One registered domain.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Domain {
    /// The name as the API takes it in `DomainName`.
    #[serde(rename = "DomainName")]
    pub domain_name: String,
    /// The ASCII (punycode) form of an internationalized name.
    #[serde(rename = "PunyCode", default)]
    pub puny_code: Option<String>,
}

/// Ids are documented as strings; accept numbers too.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_displays_code_and_message() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"RequestId":"7A8F3E1B","HostId":"alidns.aliyuncs.com",
                "Code":"DomainRecordDuplicate","Message":"The DNS record already exists.",
                "Recommend":"https://api.aliyun.com/troubleshoot?q=DomainRecordDuplicate"}"#,
        )
        .expect("parses");
        assert_eq!(
            body.to_string(),
            "DomainRecordDuplicate: The DNS record already exists."
        );
    }

    #[test]
    fn describe_domain_records_from_the_docs() {
        let r: DescribeDomainRecords = serde_json::from_str(
            r#"{"TotalCount":2,"PageSize":20,"RequestId":"536E9CAD-DB30-4647-AC87-AA5CC38C5382",
                "DomainRecords":{"Record":[
                  {"RR":"www","Line":"default","Status":"ENABLE","Locked":false,"Type":"MX",
                   "DomainName":"example.com","Value":"mail1.hichina.com","RecordId":"9999985",
                   "TTL":600,"Priority":5,"Weight":1},
                  {"RR":"_acme-challenge","Type":"TXT","Value":"abc","RecordId":9999986,"TTL":600}
                ]},"PageNumber":1}"#,
        )
        .expect("parses");
        assert_eq!(r.total_count, 2);
        assert_eq!(r.domain_records.record[0].record_id, "9999985");
        assert_eq!(r.domain_records.record[1].record_id, "9999986");
        assert_eq!(r.domain_records.record[1].kind, "TXT");
    }

    #[test]
    fn describe_domains_from_the_docs() {
        let r: DescribeDomains = serde_json::from_str(
            r#"{"PageNumber":1,"TotalCount":1,"PageSize":20,"RequestId":"x",
                "Domains":{"Domain":[{"DomainId":"00efd71a-770e-4255-b54e-6fe5659baffe",
                  "DomainName":"example.com","PunyCode":"example.com","AliDomain":true,
                  "RecordCount":3,"VersionCode":"mianfei",
                  "DnsServers":{"DnsServer":["dns1.hichina.com","dns2.hichina.com"]}}]}}"#,
        )
        .expect("parses");
        assert_eq!(r.domains.domain[0].domain_name, "example.com");
    }
}
