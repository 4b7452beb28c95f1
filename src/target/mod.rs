//! Device targets: the named profiles a recipe's `target:` picks (execution providers, fast
//! precisions, constraints, suitable passes, built-in recipe), the host's CPU features, and
//! whether this host can measure a target.
//!
//! The profiles are one table, [`PROFILES`], indexed by [`Target`]; `pipeline targets`
//! prints it and `pipeline tune` takes its built-in recipe from it.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::runtime::CPU_PROVIDER;

pub mod constraints;
mod measuring;

pub use measuring::{
    check_host, remove_unmeasured, save_unmeasured, session_config, session_providers,
    unmeasured_verdict, CANDIDATES_DIR,
};

/// The device a recipe optimizes for, by the name of its profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// This host's CPU, through ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// An x86-64 CPU with VNNI int8 dot products (AVX-512 VNNI or AVX-VNNI).
    CpuX86Vnni,
    /// A 64-bit Arm CPU (NEON, with dot product instructions on recent cores).
    CpuArm64,
    /// An NVIDIA GPU through ONNX Runtime's CUDA execution provider.
    GpuCuda,
    /// A DirectX 12 GPU on Windows through ONNX Runtime's DirectML execution provider.
    GpuDirectml,
    /// A Qualcomm Hexagon NPU through ONNX Runtime's QNN execution provider.
    NpuQnn,
    /// An Intel NPU (or CPU/GPU) through ONNX Runtime's OpenVINO execution provider.
    NpuOpenvino,
}

/// A rule a model must follow to run well (or at all) on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// Every input and intermediate dimension fixed (no symbolic batch); `fix_shapes` does it.
    StaticShapes,
    /// Quantized models in QDQ form only (QuantizeLinear/DequantizeLinear pairs), not
    /// dynamic quantization or QOperator kernels.
    QdqOnly,
    /// 16-bit activations (uint16 QDQ) are accepted beside 8-bit ones.
    Uint16Activations,
}

impl Constraint {
    /// The constraint in words, for `pipeline targets`.
    pub fn describe(self) -> &'static str {
        match self {
            Constraint::StaticShapes => "static shapes",
            Constraint::QdqOnly => "QDQ quantization only",
            Constraint::Uint16Activations => "uint16 activations allowed",
        }
    }
}

/// A CPU feature that a target needs of the host before it can be measured here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuNeed {
    /// Nothing beyond a CPU ONNX Runtime runs on.
    Any,
    /// An x86-64 CPU with AVX-512 VNNI or AVX-VNNI.
    X86Vnni,
    /// A 64-bit Arm CPU.
    Arm64,
}

/// One device profile.
#[derive(Debug)]
pub struct Profile {
    pub target: Target,
    /// What the target is, in a few words.
    pub summary: &'static str,
    /// ONNX Runtime's execution providers, most preferred first; the CPU provider is the
    /// fallback for nodes the others do not take.
    pub providers: &'static [&'static str],
    /// The precisions that run fast on it.
    pub precisions: &'static [&'static str],
    /// What a model must be to run on it.
    pub constraints: &'static [Constraint],
    /// The passes that suit it, in the order a recipe would use them.
    pub passes: &'static [&'static str],
    /// What the host CPU must have to measure it here.
    pub cpu: CpuNeed,
    /// The built-in recipe `pipeline tune` starts from (`recipes/<name>.yaml`).
    pub recipe: &'static str,
}

/// The runtime every profile measures and deploys with.
pub const RUNTIME: &str = "ONNX Runtime";

/// Every profile, in the order of [`Target`]'s variants.
pub static PROFILES: [Profile; 7] = [
    Profile {
        target: Target::Cpu,
        summary: "this host's CPU",
        providers: &[CPU_PROVIDER],
        precisions: &["fp32", "int8 (dynamic, QDQ)", "int4/int8 weights (MatMulNBits)"],
        constraints: &[],
        passes: &["fuse", "quantize_dynamic", "quantize_static", "quantize_weights"],
        cpu: CpuNeed::Any,
        recipe: include_str!("../../recipes/cpu.yaml"),
    },
    Profile {
        target: Target::CpuX86Vnni,
        summary: "x86-64 CPU with VNNI (AVX-512 VNNI or AVX-VNNI)",
        providers: &[CPU_PROVIDER],
        precisions: &["fp32", "int8 (VNNI dot products)", "int4/int8 weights (MatMulNBits)"],
        constraints: &[],
        passes: &["fuse", "quantize_dynamic", "quantize_static", "quantize_weights"],
        cpu: CpuNeed::X86Vnni,
        recipe: include_str!("../../recipes/cpu-x86-vnni.yaml"),
    },
    Profile {
        target: Target::CpuArm64,
        summary: "64-bit Arm CPU (NEON, dot product)",
        providers: &[CPU_PROVIDER],
        precisions: &["fp32", "fp16 (where the core has it)", "int8 (NEON dot product)"],
        constraints: &[],
        passes: &["fuse", "quantize_dynamic", "quantize_static", "quantize_weights"],
        cpu: CpuNeed::Arm64,
        recipe: include_str!("../../recipes/cpu-arm64.yaml"),
    },
    Profile {
        target: Target::GpuCuda,
        summary: "NVIDIA GPU",
        providers: &["CUDAExecutionProvider", CPU_PROVIDER],
        precisions: &["fp32", "fp16"],
        constraints: &[],
        passes: &["fuse", "convert_fp16"],
        cpu: CpuNeed::Any,
        recipe: include_str!("../../recipes/gpu-cuda.yaml"),
    },
    Profile {
        target: Target::GpuDirectml,
        summary: "DirectX 12 GPU (Windows)",
        providers: &["DmlExecutionProvider", CPU_PROVIDER],
        precisions: &["fp32", "fp16"],
        constraints: &[],
        passes: &["fuse", "convert_fp16"],
        cpu: CpuNeed::Any,
        recipe: include_str!("../../recipes/gpu-directml.yaml"),
    },
    Profile {
        target: Target::NpuQnn,
        summary: "Qualcomm Hexagon NPU",
        providers: &["QNNExecutionProvider", CPU_PROVIDER],
        precisions: &["int8 QDQ", "uint16 activations with int8 weights (QDQ)"],
        constraints: &[
            Constraint::StaticShapes,
            Constraint::QdqOnly,
            Constraint::Uint16Activations,
        ],
        passes: &["fix_shapes", "quantize_static"],
        cpu: CpuNeed::Any,
        recipe: include_str!("../../recipes/npu-qnn.yaml"),
    },
    Profile {
        target: Target::NpuOpenvino,
        summary: "Intel NPU through OpenVINO",
        providers: &["OpenVINOExecutionProvider", CPU_PROVIDER],
        precisions: &["fp16", "int8 QDQ"],
        constraints: &[Constraint::StaticShapes, Constraint::QdqOnly],
        passes: &["fix_shapes", "quantize_static"],
        cpu: CpuNeed::Any,
        recipe: include_str!("../../recipes/npu-openvino.yaml"),
    },
];

impl Target {
    /// Every target, in table order.
    pub fn all() -> impl Iterator<Item = Target> {
        PROFILES.iter().map(|profile| profile.target)
    }

    /// The name a recipe and the command line use, like `cpu-x86-vnni`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::CpuX86Vnni => "cpu-x86-vnni",
            Target::CpuArm64 => "cpu-arm64",
            Target::GpuCuda => "gpu-cuda",
            Target::GpuDirectml => "gpu-directml",
            Target::NpuQnn => "npu-qnn",
            Target::NpuOpenvino => "npu-openvino",
        }
    }

    /// The target named `name`, or an error that suggests the closest name.
    pub fn from_name(name: &str) -> Result<Target, UnknownTarget> {
        Target::all()
            .find(|target| target.name() == name)
            .ok_or_else(|| UnknownTarget { name: name.to_string(), closest: closest_name(name) })
    }

    /// The target's profile.
    pub fn profile(self) -> &'static Profile {
        // The table is in variant order; the test `table_is_in_variant_order` keeps it so.
        &PROFILES[self as usize]
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A target name that is not in the table.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown target `{name}`\n  hint: {}",
    match closest {
        Some(best) => format!("did you mean `{best}`? `pipeline targets` lists them all"),
        None => format!("the targets are: {}", names().join(", ")),
    }
)]
pub struct UnknownTarget {
    pub name: String,
    pub closest: Option<&'static str>,
}

/// Every target name, in table order.
pub fn names() -> Vec<&'static str> {
    Target::all().map(Target::name).collect()
}

fn closest_name(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    Target::all()
        .map(|target| (strsim::jaro_winkler(&lower, target.name()), target.name()))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// The CPU features of this host that matter for inference, each detected or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCpu {
    /// The architecture, like `x86_64` or `aarch64`.
    pub arch: &'static str,
    /// Every feature checked, with whether the host has it, like `("avx2", true)`; JSON
    /// writes it as an object `{"avx2": true, ...}`.
    #[serde(serialize_with = "features_as_object")]
    pub features: Vec<(&'static str, bool)>,
}

impl HostCpu {
    /// Detects this host's features with the standard library's runtime checks.
    pub fn detect() -> HostCpu {
        HostCpu { arch: std::env::consts::ARCH, features: detect_features() }
    }

    /// Whether the host has `feature` (a name from [`HostCpu::features`]).
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|(name, present)| *name == feature && *present)
    }

    /// The features the host has, joined by spaces, or `none`.
    pub fn present(&self) -> String {
        let present: Vec<&str> =
            self.features.iter().filter(|(_, has)| *has).map(|(name, _)| *name).collect();
        if present.is_empty() {
            "none".to_string()
        } else {
            present.join(" ")
        }
    }

    /// Why this host cannot stand for a target that needs `need`, or `None` if it can.
    pub fn lacks(&self, need: CpuNeed) -> Option<String> {
        match need {
            CpuNeed::Any => None,
            CpuNeed::X86Vnni if self.arch != "x86_64" => {
                Some(format!("the host CPU is {}, not x86_64", self.arch))
            }
            CpuNeed::X86Vnni if !(self.has("avx512vnni") || self.has("avxvnni")) => {
                Some("the host CPU has neither AVX-512 VNNI nor AVX-VNNI".to_string())
            }
            CpuNeed::X86Vnni => None,
            CpuNeed::Arm64 if self.arch != "aarch64" => {
                Some(format!("the host CPU is {}, not aarch64", self.arch))
            }
            CpuNeed::Arm64 => None,
        }
    }
}

fn features_as_object<S: serde::Serializer>(
    features: &[(&'static str, bool)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(features.iter().map(|(name, has)| (*name, *has)))
}

#[cfg(target_arch = "x86_64")]
fn detect_features() -> Vec<(&'static str, bool)> {
    // AMX's runtime check is not stable in std; CPUID leaf 7 reports it in EDX bits 24
    // (AMX-TILE) and 25 (AMX-INT8).
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that Rust's std supports.
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    vec![
        ("avx2", std::is_x86_feature_detected!("avx2")),
        ("fma", std::is_x86_feature_detected!("fma")),
        ("avx512f", std::is_x86_feature_detected!("avx512f")),
        ("avx512bw", std::is_x86_feature_detected!("avx512bw")),
        ("avx512vnni", std::is_x86_feature_detected!("avx512vnni")),
        ("avxvnni", std::is_x86_feature_detected!("avxvnni")),
        ("amx-tile", leaf7.edx >> 24 & 1 == 1),
        ("amx-int8", leaf7.edx >> 25 & 1 == 1),
    ]
}

#[cfg(target_arch = "aarch64")]
fn detect_features() -> Vec<(&'static str, bool)> {
    vec![
        ("neon", std::arch::is_aarch64_feature_detected!("neon")),
        ("dotprod", std::arch::is_aarch64_feature_detected!("dotprod")),
        ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
    ]
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect_features() -> Vec<(&'static str, bool)> {
    Vec::new()
}

/// Whether this host can measure a target, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurability {
    pub measurable: bool,
    /// Why not, in words naming the missing provider or CPU feature; `None` when measurable.
    pub reason: Option<String>,
}

/// Whether a host with ONNX Runtime providers `available` and CPU `host` can measure `target`.
pub fn measurability(target: Target, available: &[String], host: &HostCpu) -> Measurability {
    let profile = target.profile();
    let missing: Vec<&str> = profile
        .providers
        .iter()
        .copied()
        .filter(|provider| !available.iter().any(|a| a == provider))
        .collect();
    let mut reasons = Vec::new();
    if !missing.is_empty() {
        reasons.push(format!(
            "{} {} not available in this ONNX Runtime (it has {})",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if available.is_empty() { "none".to_string() } else { available.join(", ") }
        ));
    }
    reasons.extend(host.lacks(profile.cpu));
    Measurability {
        measurable: reasons.is_empty(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    }
}

/// One row of `pipeline targets`: a profile and whether this host can measure it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    pub name: &'static str,
    pub summary: &'static str,
    pub runtime: &'static str,
    pub providers: &'static [&'static str],
    pub precisions: &'static [&'static str],
    pub constraints: Vec<&'static str>,
    pub passes: &'static [&'static str],
    pub measurable: bool,
    /// Why this host cannot measure it; `None` when it can.
    pub reason: Option<String>,
}

/// What `pipeline targets` shows: the host, the runtime's providers, and every profile.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub host: HostCpu,
    /// The providers of the loaded ONNX Runtime, or why it could not be loaded.
    #[serde(serialize_with = "providers_or_error")]
    pub providers: Result<Vec<String>, String>,
    pub targets: Vec<TargetRow>,
}

/// `{"available": [...]}` or `{"error": "..."}`.
fn providers_or_error<S: serde::Serializer>(
    providers: &Result<Vec<String>, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;

    let mut map = serializer.serialize_map(Some(1))?;
    match providers {
        Ok(available) => map.serialize_entry("available", available)?,
        Err(why) => map.serialize_entry("error", why)?,
    }
    map.end()
}

impl Listing {
    /// Every profile, measured against `providers` (the loaded runtime's, or why there is
    /// none) and `host`.
    pub fn new(providers: Result<Vec<String>, String>, host: HostCpu) -> Listing {
        let targets = PROFILES
            .iter()
            .map(|profile| {
                let check = match &providers {
                    Ok(available) => measurability(profile.target, available, &host),
                    Err(why) => Measurability {
                        measurable: false,
                        reason: Some(format!("ONNX Runtime did not load: {why}")),
                    },
                };
                TargetRow {
                    name: profile.target.name(),
                    summary: profile.summary,
                    runtime: RUNTIME,
                    providers: profile.providers,
                    precisions: profile.precisions,
                    constraints: profile.constraints.iter().map(|c| c.describe()).collect(),
                    passes: profile.passes,
                    measurable: check.measurable,
                    reason: check.reason,
                }
            })
            .collect();
        Listing { providers, host, targets }
    }

    /// The listing as a terminal table, with the host and runtime above it.
    pub fn render(&self) -> String {
        use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};

        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
        table.set_header([
            "target",
            "providers",
            "fast precisions",
            "constraints",
            "measurable here",
        ]);
        for row in &self.targets {
            let constraints = if row.constraints.is_empty() {
                "-".to_string()
            } else {
                row.constraints.join(", ")
            };
            let measurable = match &row.reason {
                None => "yes".to_string(),
                Some(reason) => format!("no: {reason}"),
            };
            table.add_row([
                format!("{}\n{}", row.name, row.summary),
                row.providers.join("\n"),
                row.precisions.join("\n"),
                constraints,
                measurable,
            ]);
        }
        let providers = match &self.providers {
            Ok(available) => available.join(", "),
            Err(why) => format!("unknown (ONNX Runtime did not load: {why})"),
        };
        format!(
            "host: {} with {}\nonnx runtime providers: {providers}\n{table}\n",
            self.host.arch,
            self.host.present()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_variant_order_with_unique_names() {
        for (index, profile) in PROFILES.iter().enumerate() {
            assert_eq!(profile.target as usize, index, "{} is out of order", profile.target);
            assert_eq!(profile.target.profile().target, profile.target);
        }
        let mut names = names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROFILES.len());
    }

    #[test]
    fn every_profile_names_real_passes_and_an_ort_provider() {
        for profile in &PROFILES {
            for pass in profile.passes {
                assert!(
                    pipeline_passes::pass::find(pass).is_some(),
                    "{}: no pass `{pass}`",
                    profile.target
                );
            }
            assert!(
                profile.providers.iter().all(|p| p.ends_with("ExecutionProvider")),
                "{}",
                profile.target
            );
            assert_eq!(profile.providers.last(), Some(&CPU_PROVIDER), "{}", profile.target);
            assert!(!profile.precisions.is_empty(), "{}", profile.target);
        }
        let npu = Target::NpuQnn.profile();
        assert!(npu.constraints.contains(&Constraint::StaticShapes));
        assert!(npu.constraints.contains(&Constraint::QdqOnly));
        assert!(npu.constraints.contains(&Constraint::Uint16Activations));
    }

    #[test]
    fn names_round_trip_and_serde_agrees() {
        for target in Target::all() {
            assert_eq!(Target::from_name(target.name()).unwrap(), target);
            let json = serde_json::to_value(target).unwrap();
            assert_eq!(json, serde_json::Value::String(target.name().to_string()));
        }
    }

    #[test]
    fn an_unknown_name_suggests_the_closest() {
        let error = Target::from_name("gpu-cude").unwrap_err();
        assert_eq!(error.closest, Some("gpu-cuda"));
        assert!(error.to_string().contains("did you mean `gpu-cuda`?"), "{error}");
        let error = Target::from_name("npu-openvno").unwrap_err();
        assert_eq!(error.closest, Some("npu-openvino"));
        let error = Target::from_name("zzzz").unwrap_err();
        assert_eq!(error.closest, None);
        assert!(error.to_string().contains("cpu-arm64"), "{error}");
    }

    #[test]
    fn host_detection_lists_the_features_of_its_architecture() {
        let host = HostCpu::detect();
        assert_eq!(host.arch, std::env::consts::ARCH);
        let names: Vec<&str> = host.features.iter().map(|(name, _)| *name).collect();
        match host.arch {
            "x86_64" => {
                for wanted in ["avx2", "avx512f", "avx512bw", "avx512vnni", "avxvnni", "amx-int8"] {
                    assert!(names.contains(&wanted), "{wanted} not checked: {names:?}");
                }
                // AVX-512 BW or VNNI implies AVX-512 F on every CPU that has them.
                if host.has("avx512bw") || host.has("avx512vnni") {
                    assert!(host.has("avx512f"));
                }
            }
            "aarch64" => assert!(names.contains(&"dotprod"), "{names:?}"),
            _ => assert!(names.is_empty()),
        }
    }

    fn host(arch: &'static str, features: &[(&'static str, bool)]) -> HostCpu {
        HostCpu { arch, features: features.to_vec() }
    }

    #[test]
    fn listing_has_every_profile_and_says_why_not() {
        let listing = Listing::new(Ok(vec![CPU_PROVIDER.to_string()]), HostCpu::detect());
        assert_eq!(listing.targets.len(), PROFILES.len());
        let cpu = &listing.targets[0];
        assert!(cpu.measurable && cpu.reason.is_none());
        let cuda = listing.targets.iter().find(|t| t.name == "gpu-cuda").unwrap();
        assert!(!cuda.measurable);
        let text = listing.render();
        for name in names() {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("no: CUDAExecutionProvider is not available"), "{text}");

        let broken = Listing::new(Err("not found".into()), HostCpu::detect());
        assert!(broken.targets.iter().all(|t| !t.measurable));
        assert!(broken.render().contains("ONNX Runtime did not load: not found"));
    }

    #[test]
    fn measurability_names_the_missing_provider_or_feature() {
        let cpu_only = vec![CPU_PROVIDER.to_string()];
        let plain = host("x86_64", &[("avx2", true), ("avx512vnni", false), ("avxvnni", false)]);
        assert!(measurability(Target::Cpu, &cpu_only, &plain).measurable);

        let cuda = measurability(Target::GpuCuda, &cpu_only, &plain);
        assert!(!cuda.measurable);
        let reason = cuda.reason.unwrap();
        assert!(reason.contains("CUDAExecutionProvider is not available"), "{reason}");
        assert!(reason.contains("it has CPUExecutionProvider"), "{reason}");

        let with_cuda = vec!["CUDAExecutionProvider".to_string(), CPU_PROVIDER.to_string()];
        assert!(measurability(Target::GpuCuda, &with_cuda, &plain).measurable);

        let vnni = measurability(Target::CpuX86Vnni, &cpu_only, &plain);
        assert!(vnni.reason.unwrap().contains("neither AVX-512 VNNI nor AVX-VNNI"));
        let client = host("x86_64", &[("avx512vnni", false), ("avxvnni", true)]);
        assert!(measurability(Target::CpuX86Vnni, &cpu_only, &client).measurable);

        let arm = measurability(Target::CpuArm64, &cpu_only, &plain);
        assert!(arm.reason.unwrap().contains("not aarch64"));
        let arm_host = host("aarch64", &[("dotprod", true)]);
        assert!(measurability(Target::CpuArm64, &cpu_only, &arm_host).measurable);
        assert!(!measurability(Target::CpuX86Vnni, &cpu_only, &arm_host).measurable);
    }
}
