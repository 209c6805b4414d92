# frozen_string_literal: true

module Pushgate
  # Rails: `config.pushgate.<setting> = ...` in application.rb or an
  # environment file, or `Pushgate.configure { |c| ... }` in an initializer.
  # The JWT secret may also come from credentials (pushgate: jwt_secret:).
  class Railtie < ::Rails::Railtie
    config.pushgate = ActiveSupport::OrderedOptions.new

    # state_attr_accessor, whispers_to, `stream_from ..., whisper: true` and
    # the RPC's recording socket, ready before the app's channel classes load
    # (eager loading runs before the routes that mount Pushgate::Cable::RPC).
    initializer "pushgate.action_cable_hooks" do
      ActiveSupport.on_load(:action_cable_connection) { require "pushgate/cable/action_cable_hooks" }
      ActiveSupport.on_load(:action_cable_channel) { require "pushgate/cable/action_cable_hooks" }
    end

    initializer "pushgate.configure" do |app|
      Pushgate.configure do |c|
        app.config.pushgate.each { |key, value| c.public_send("#{key}=", value) }
        if c.jwt_secret.nil? && app.respond_to?(:credentials)
          c.jwt_secret = app.credentials.dig(:pushgate, :jwt_secret)
        end
      end
    end
  end
end
