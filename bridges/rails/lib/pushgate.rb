# frozen_string_literal: true

require "pushgate/version"
require "pushgate/configuration"
require "pushgate/envelope"
require "pushgate/token"
require "pushgate/publisher"
require "pushgate/after_commit"
require "pushgate/cable_helper"

# Publish to pushgate from Rails or any Ruby program.
#
#   Pushgate.publish_to_user(current_user, { event: "invoice.paid" })
#   Pushgate.broadcast("news", { title: "Hello" })
#   Pushgate.batch { users.each { |u| Pushgate.publish_to_user(u, { event: "digest" }) } }
#   Pushgate.publish_after_commit { Pushgate.broadcast("orders", order.as_json) }
#   token = Pushgate.connection_token(current_user, ttl: 600, channels: ["news"])
module Pushgate
  # The connect proxy's Rack endpoint (needs Rack, which Rails has): see pushgate/connect_proxy.rb.
  autoload :ConnectProxy, "pushgate/connect_proxy"
  # The gateway's events from NSQ, for a worker process: see pushgate/events.rb.
  autoload :Events, "pushgate/events"

  class << self
    def configure
      yield config
      @publisher = nil
      config
    end

    def config
      @config ||= Configuration.new
    end

    def publisher
      @publisher ||= Publisher.new(config)
    end

    # Publish an envelope: channel/channels/user/users, data, optional id.
    def publish(envelope)
      publisher.publish(envelope)
    end

    # receipt: true (with an id) asks the gateway for a delivered or undelivered
    # event about it (docs/events.md).
    def publish_to_user(user, data, id: nil, receipt: false)
      publisher.publish("user" => user_key(user), "data" => data, "id" => id, "receipt" => receipt)
    end

    def broadcast(channel, data, id: nil)
      publisher.publish("channel" => channel.to_s, "data" => data, "id" => id)
    end

    def batch(&block)
      publisher.batch(&block)
    end

    # Runs the block (usually publishes) only once the current ActiveRecord
    # transaction commits; never if it rolls back.
    def publish_after_commit(&block)
      AfterCommit.run(&block)
    end

    def connection_token(user, ttl: config.token_ttl, channels: nil, info: nil, now: nil)
      Token.connection(config.jwt_secret, user_key(user), ttl: ttl, channels: channels, info: info, now: now)
    end

    def subscription_token(user, channel, ttl: config.token_ttl, now: nil)
      Token.subscription(config.jwt_secret, user_key(user), channel, ttl: ttl, now: now)
    end

    def user_key(user)
      config.user_key.call(user)
    end
  end
end

require "pushgate/railtie" if defined?(Rails::Railtie)
