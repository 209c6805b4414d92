# frozen_string_literal: true

module Pushgate
  # Rails: `config.pushgate.<setting> = ...` in application.rb or an
  # environment file, or `Pushgate.configure { |c| ... }` in an initializer.
  # The JWT secret may also come from credentials (pushgate: jwt_secret:).
  class Railtie < ::Rails::Railtie
    config.pushgate = ActiveSupport::OrderedOptions.new

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
