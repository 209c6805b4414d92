# frozen_string_literal: true

# Written by make from VERSION at the root of the repository, the one place
# the version is written: do not edit.
module Pushgate
  VERSION = "0.1.0"
end
