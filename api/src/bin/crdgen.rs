//! Prints the `ContrastiveRun` CRD as YAML (`--without-cel`: without CEL rules, for apiservers
//! before 1.28), or the API reference as Markdown (`--markdown`).

use std::process::ExitCode;

use kontrast_api::crd;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => crd::crd_yaml(),
        ["--without-cel"] => crd::crd_without_cel_yaml(),
        ["--markdown"] => crd::markdown_reference(),
        _ => {
            eprintln!("usage: crdgen [--without-cel | --markdown]");
            return ExitCode::from(2);
        }
    };
    print!("{text}");
    ExitCode::SUCCESS
}
