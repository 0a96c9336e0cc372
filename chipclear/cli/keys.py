"""`chipclear keys`: a person's signing key pair (Ed25519), made on their own machine."""

from __future__ import annotations

from typing import Annotated

import typer

from chipclear import keys
from chipclear.cli import output
from chipclear.cli.common import handles_errors, settings

keys_app = typer.Typer(help="Make and show signing keys.", no_args_is_help=True)


@keys_app.command("new")
@handles_errors
def new(
    name: Annotated[str, typer.Argument(help="The person's name, as in the policy's reviewer table.")],
) -> None:
    """Make NAME's key pair; print `NAME ed25519:<public key>` for the policy, never the private key.

    The private key goes to $CHIPCLEAR_HOME/keys/NAME.key (0600, in a 0700 directory); an existing
    key is never overwritten.
    """
    home = settings().home
    private, public = keys.new_key(home, name, recorder_allowed=name == keys.RECORDER)
    output.console.print(f"{name} {public}", highlight=False, soft_wrap=True)
    output.errors.print(
        f"private key: {private} (keep it to yourself); public key: {keys.public_path(home, name)}\n"
        f'in the policy: [reviewers.{name}] key = "{public}"  (or key = "file:keys/{name}.pub")',
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@keys_app.command("show")
@handles_errors
def show(name: Annotated[str, typer.Argument(help="Whose public key.")]) -> None:
    """Print `NAME ed25519:<public key>` from NAME's key file."""
    home = settings().home
    public = keys.public_text(
        keys.load_private(keys.private_path(home, keys.check_name(name, recorder_allowed=True)))
    )
    output.console.print(f"{name} {public}", highlight=False, soft_wrap=True)
