# frozen_string_literal: true

module Pushgate
  VERSION = "0.1.0"
end
