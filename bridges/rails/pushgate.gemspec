# frozen_string_literal: true

require_relative "lib/pushgate/version"

Gem::Specification.new do |spec|
  spec.name = "pushgate"
  spec.version = Pushgate::VERSION
  spec.summary = "Publish to pushgate (NSQ to WebSocket) from Rails or any Ruby app"
  spec.description = "Publishes events into NSQ for the pushgate gateway, mints its connection and " \
                     "subscription tokens, publishes after commit, provides an ActionCable " \
                     "pubsub adapter (adapter: nsq), and runs the app's Action Cable channels " \
                     "for the gateway's RPC (Pushgate::Cable::RPC). Standard library only."
  spec.license = "MIT"
  spec.authors = ["pushgate developers"]
  spec.files = Dir["lib/**/*.rb"] + ["LICENSE"]
  spec.require_paths = ["lib"]
  spec.required_ruby_version = ">= 3.0"
end
