//! AWS Query-protocol calls to moto for the few EC2 reads the local stack
//! makes itself (the EC2 SDK crate would cost minutes of build for three
//! calls), and reading their XML answers.

use anyhow::{bail, Context, Result};

/// Calls `action` of `service` in `region` on moto. moto checks no
/// signature; it takes the region and service from the credential scope.
pub async fn call(
    moto: &str,
    service: &str,
    version: &str,
    region: &str,
    action: &str,
    params: &[(&str, &str)],
) -> Result<String> {
    let body = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action).append_pair("Version", version);
        for (k, v) in params {
            form.append_pair(k, v);
        }
        form.finish()
    };
    let resp = reqwest::Client::new()
        .post(format!("{moto}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body)
        .send()
        .await
        .with_context(|| format!("{service} {action} in {region}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!(
            "{service} {action} in {region}: HTTP {status}: {}",
            porter_core::aws::clip(&text, 300)
        );
    }
    Ok(text)
}

/// The text of the first descendant of `node` named `name`.
pub fn text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.descendants().find(|n| n.has_tag_name(name)).and_then(|n| n.text())
}

/// The text of the direct child of `node` named `name`.
pub fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children().find(|n| n.has_tag_name(name)).and_then(|n| n.text())
}

/// One instance as DescribeInstances tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: String,
    pub subnet: Option<String>,
    pub vpc: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Instance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub async fn describe_instances(moto: &str, region: &str) -> Result<Vec<Instance>> {
    let xml = call(moto, "ec2", "2016-11-15", region, "DescribeInstances", &[]).await?;
    parse_instances(&xml)
}

fn parse_instances(xml: &str) -> Result<Vec<Instance>> {
    let doc = roxmltree::Document::parse(xml).context("DescribeInstances answer")?;
    let mut out = Vec::new();
    for set in doc.descendants().filter(|n| n.has_tag_name("instancesSet")) {
        for item in set.children().filter(|n| n.has_tag_name("item")) {
            let Some(id) = child_text(item, "instanceId") else {
                continue;
            };
            let state = item
                .children()
                .find(|n| n.has_tag_name("instanceState"))
                .and_then(|s| child_text(s, "name"))
                .unwrap_or_default();
            let tags = item
                .children()
                .find(|n| n.has_tag_name("tagSet"))
                .map(|set| {
                    set.children()
                        .filter(|n| n.has_tag_name("item"))
                        .filter_map(|t| {
                            Some((
                                child_text(t, "key")?.to_owned(),
                                child_text(t, "value").unwrap_or_default().to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Instance {
                id: id.to_owned(),
                state: state.to_owned(),
                subnet: child_text(item, "subnetId").map(str::to_owned),
                vpc: child_text(item, "vpcId").map(str::to_owned),
                tags,
            });
        }
    }
    Ok(out)
}

/// The instance's UserData, decoded: the bytes its boot runs.
pub async fn user_data(moto: &str, region: &str, instance: &str) -> Result<Option<Vec<u8>>> {
    use base64::Engine as _;
    let xml = call(
        moto,
        "ec2",
        "2016-11-15",
        region,
        "DescribeInstanceAttribute",
        &[("InstanceId", instance), ("Attribute", "userData")],
    )
    .await?;
    let doc = roxmltree::Document::parse(&xml).context("DescribeInstanceAttribute answer")?;
    let Some(value) = doc
        .descendants()
        .find(|n| n.has_tag_name("userData"))
        .and_then(|n| child_text(n, "value"))
    else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .context("the instance's UserData is not base64")?;
    Ok(Some(bytes))
}

/// DescribeAutoScalingGroups of one group: its XML answer.
pub async fn describe_group(moto: &str, region: &str, group: &str) -> Result<String> {
    call(
        moto,
        "autoscaling",
        "2011-01-01",
        region,
        "DescribeAutoScalingGroups",
        &[("AutoScalingGroupNames.member.1", group)],
    )
    .await
}

/// A subnet's CIDR block.
pub async fn subnet_cidr(moto: &str, region: &str, subnet: &str) -> Result<String> {
    let call = ("ec2", "2016-11-15", "DescribeSubnets");
    let [cidr] = fields(moto, region, call, &[("SubnetId.1", subnet)], ["cidrBlock"]).await?;
    Ok(cidr)
}

/// A target group's ARN and VPC, by name.
pub async fn target_group(moto: &str, region: &str, name: &str) -> Result<(String, String)> {
    let call = ("elasticloadbalancing", "2015-12-01", "DescribeTargetGroups");
    let [arn, vpc] = fields(
        moto,
        region,
        call,
        &[("Names.member.1", name)],
        ["TargetGroupArn", "VpcId"],
    )
    .await?;
    Ok((arn, vpc))
}

/// The first text of each of `tags` in the answer to `(service, version,
/// action)`: an error names the one missing.
async fn fields<const N: usize>(
    moto: &str,
    region: &str,
    (service, version, action): (&str, &str, &str),
    params: &[(&str, &str)],
    tags: [&str; N],
) -> Result<[String; N]> {
    let xml = call(moto, service, version, region, action, params).await?;
    let doc = roxmltree::Document::parse(&xml).with_context(|| format!("{action} answer"))?;
    let mut out = Vec::with_capacity(N);
    for tag in tags {
        let found = text(doc.root(), tag).with_context(|| format!("{action} in {region} {params:?}: no {tag}"))?;
        out.push(found.to_owned());
    }
    Ok(out.try_into().expect("one field per tag"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_instances_with_their_tags() {
        let xml = r#"<DescribeInstancesResponse><reservationSet><item><instancesSet>
          <item><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState>
          <subnetId>subnet-a</subnetId><vpcId>vpc-a</vpcId>
          <tagSet><item><key>porter:service</key><value>hello</value></item></tagSet></item>
          <item><instanceId>i-2</instanceId><instanceState><name>terminated</name></instanceState></item>
        </instancesSet></item></reservationSet></DescribeInstancesResponse>"#;
        let got = parse_instances(xml).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "i-1");
        assert_eq!(got[0].state, "running");
        assert_eq!(got[0].subnet.as_deref(), Some("subnet-a"));
        assert_eq!(got[0].tag("porter:service"), Some("hello"));
        assert_eq!(got[1].state, "terminated");
        assert!(got[1].tags.is_empty() && got[1].vpc.is_none());
        assert!(parse_instances("<not xml").is_err());
    }
}
