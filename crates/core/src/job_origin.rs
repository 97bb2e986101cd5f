//! Whether a CodePipeline job may deploy what it asks, judged by where it
//! comes from.
//!
//! A job event is only a claim: anyone who may invoke a function, or create
//! a pipeline in the account, can hand one over. So before anything runs,
//! the front door reads the job back from CodePipeline (its pipeline,
//! stage, action and execution, and the configuration and input artifact
//! CodePipeline holds for it) and the pipeline's declaration, and these
//! rules decide:
//!
//! - the pipeline is this installation's (its main pipeline, or a branch
//!   pipeline made from it, named after it);
//! - the job's stage holds the job's action, and the environment the
//!   action declares is the one the job asks for;
//! - a branch pipeline deploys only to the environments branches may;
//! - an environment that needs an approval (production) is deployed only
//!   from a stage after one with a manual approval;
//! - the input artifact is in the pipeline's own artifact store, under the
//!   pipeline's own prefix.

use crate::release::S3Object;

/// What an installation lets its pipelines deploy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// The main pipeline's name; branch pipelines are named after it.
    pub main_pipeline: String,
    /// Environments deployed only after a manual approval.
    pub approved_environments: Vec<String>,
    /// Environments a branch pipeline may deploy to.
    pub branch_environments: Vec<String>,
}

/// Where CodePipeline says a job comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub pipeline: String,
    pub stage: String,
    pub action: String,
    /// The pipeline execution the job belongs to.
    pub execution: String,
}

/// One stage of a pipeline as its declaration has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    /// The stage holds a manual approval.
    pub approval: bool,
    pub actions: Vec<Action>,
}

/// One action of a stage: its name and the environment it deploys, if it
/// names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub name: String,
    pub environment: Option<String>,
}

/// CodePipeline's prefix for a pipeline's artifacts in its store: the
/// first 20 characters of its name.
pub fn artifact_prefix(pipeline: &str) -> String {
    let head: String = pipeline.chars().take(20).collect();
    format!("{head}/")
}

impl Rules {
    /// Whether `pipeline` is this installation's; and whether it is a
    /// branch pipeline.
    fn pipeline_kind(&self, pipeline: &str) -> Option<bool> {
        if self.main_pipeline.is_empty() {
            return None;
        }
        if pipeline == self.main_pipeline {
            return Some(false);
        }
        pipeline
            .strip_prefix(&self.main_pipeline)
            .filter(|rest| rest.starts_with('-'))
            .map(|_| true)
    }

    /// Why `pipeline` is not this installation's, if it is not: asked
    /// before its declaration is read (the functions may read only the
    /// installation's pipelines).
    pub fn foreign(&self, pipeline: &str) -> Option<String> {
        self.pipeline_kind(pipeline).is_none().then(|| {
            format!(
                "the job comes from pipeline {pipeline}, which is not this installation's ({} and its branch pipelines)",
                self.main_pipeline
            )
        })
    }

    /// Whether the job may deploy `environment`; why not, if not.
    pub fn check(
        &self,
        origin: &Origin,
        stages: &[Stage],
        environment: &str,
        artifact_stores: &[&str],
        input: Option<&S3Object>,
    ) -> Result<(), String> {
        let Some(branch) = self.pipeline_kind(&origin.pipeline) else {
            return Err(self.foreign(&origin.pipeline).unwrap_or_default());
        };
        let Some(at) = stages.iter().position(|s| s.name == origin.stage) else {
            return Err(format!("pipeline {} has no stage {}", origin.pipeline, origin.stage));
        };
        let Some(action) = stages[at].actions.iter().find(|a| a.name == origin.action) else {
            return Err(format!(
                "stage {} of pipeline {} has no action {}",
                origin.stage, origin.pipeline, origin.action
            ));
        };
        if let Some(declared) = &action.environment {
            if declared != environment {
                return Err(format!(
                    "action {} of pipeline {} deploys {declared}, and the job asks for {environment}",
                    origin.action, origin.pipeline
                ));
            }
        }
        if branch && !self.branch_environments.iter().any(|e| e == environment) {
            return Err(format!(
                "{} is a branch pipeline, and branches may not deploy to {environment} (the installation's BranchEnvironments)",
                origin.pipeline
            ));
        }
        let approved_before = stages[..at].iter().any(|s| s.approval);
        if self.approved_environments.iter().any(|e| e == environment) && !approved_before {
            return Err(format!(
                "{environment} is deployed only after a manual approval, and stage {} of pipeline {} has none before it",
                origin.stage, origin.pipeline
            ));
        }
        if let Some(input) = input {
            let prefix = artifact_prefix(&origin.pipeline);
            if !artifact_stores.contains(&input.bucket.as_str()) || !input.key.starts_with(&prefix) {
                return Err(format!(
                    "the input artifact {} is not in pipeline {}'s own artifact store ({}, under {prefix})",
                    input.url(),
                    origin.pipeline,
                    artifact_stores.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            main_pipeline: "web-pipeline".into(),
            approved_environments: vec!["production".into()],
            branch_environments: vec!["dev".into()],
        }
    }

    fn stages() -> Vec<Stage> {
        let deploy = |env: &str| Action {
            name: "Deploy".into(),
            environment: Some(env.into()),
        };
        vec![
            Stage {
                name: "Source".into(),
                approval: false,
                actions: vec![],
            },
            Stage {
                name: "Staging".into(),
                approval: false,
                actions: vec![deploy("staging")],
            },
            Stage {
                name: "Approve".into(),
                approval: true,
                actions: vec![],
            },
            Stage {
                name: "Production".into(),
                approval: false,
                actions: vec![deploy("production")],
            },
        ]
    }

    fn origin(pipeline: &str, stage: &str) -> Origin {
        Origin {
            pipeline: pipeline.into(),
            stage: stage.into(),
            action: "Deploy".into(),
            execution: "e".into(),
        }
    }

    fn input(key: &str) -> S3Object {
        S3Object {
            bucket: "artifacts".into(),
            key: key.into(),
        }
    }

    #[test]
    fn a_job_deploys_only_what_its_pipeline_and_stage_may() {
        let r = rules();
        let ok = |o: &Origin, env: &str, key: &str| r.check(o, &stages(), env, &["artifacts"], Some(&input(key)));
        assert_eq!(
            ok(&origin("web-pipeline", "Staging"), "staging", "web-pipeline/src/a.zip"),
            Ok(())
        );
        assert_eq!(
            ok(&origin("web-pipeline", "Production"), "production", "web-pipeline/s/a"),
            Ok(())
        );

        let refused = [
            (
                ok(&origin("other", "Staging"), "staging", "other/a"),
                "not this installation's",
            ),
            (
                ok(&origin("web-pipelinex", "Staging"), "staging", "web-pipelinex/a"),
                "not this installation's",
            ),
            (
                ok(&origin("web-pipeline", "Staging"), "production", "web-pipeline/a"),
                "deploys staging",
            ),
            (
                ok(&origin("web-pipeline", "Nowhere"), "staging", "web-pipeline/a"),
                "no stage",
            ),
            (
                ok(&origin("web-pipeline", "Staging"), "staging", "elsewhere/a.zip"),
                "artifact store",
            ),
        ];
        for (got, why) in refused {
            assert!(got.as_ref().is_err_and(|e| e.contains(why)), "{why}: {got:?}");
        }
        // A stage that deploys production with no approval before it.
        let mut early = stages();
        early.swap(2, 3);
        let got = r.check(&origin("web-pipeline", "Production"), &early, "production", &[], None);
        assert!(got.is_err_and(|e| e.contains("manual approval")));
        // A branch pipeline deploys only the branch environments.
        let mut branch = stages();
        branch[1].actions[0].environment = Some("dev".into());
        let o = origin("web-pipeline-feature-x-1a2b3c4d", "Staging");
        assert_eq!(r.check(&o, &branch, "dev", &[], None), Ok(()));
        branch[1].actions[0].environment = Some("staging".into());
        assert!(r
            .check(&o, &branch, "staging", &[], None)
            .is_err_and(|e| e.contains("branch pipeline")));
        assert_eq!(artifact_prefix("a-very-long-pipeline-name"), "a-very-long-pipeline/");
    }
}
