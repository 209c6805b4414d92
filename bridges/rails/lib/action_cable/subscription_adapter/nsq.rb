# frozen_string_literal: true

require "json"
require "action_cable/subscription_adapter/base"
require "pushgate"
require "pushgate/cable/socket_id"

module ActionCable
  module SubscriptionAdapter
    # `adapter: nsq` in config/cable.yml: ActionCable.server.broadcast(stream,
    # payload), Channel.broadcast_to and Turbo's broadcasts go to pushgate's
    # channel `stream` through NSQ. Broadcast only: browsers connect to the
    # pushgate gateway, not to Rails' /cable.
    #
    #   production:
    #     adapter: nsq
    #     url: http://127.0.0.1:4151   # optional, else PUSHGATE_NSQD_HTTP_ADDRESS
    #     topic: pushgate              # optional, else PUSHGATE_TOPIC
    #     channel_prefix: myapp        # optional: streams go to channel "myapp:<stream>"
    #
    # channel_prefix works as in Rails' redis adapter: a broadcast to stream S
    # goes to channel "PREFIX:S"; the gateway's --cable-channel-prefix (the same
    # value) maps /cable subscriptions to S the same way, so stream names and
    # signed stream names stay unprefixed. Personal streams ("#<user>") are
    # never prefixed: they are the user's channel whoever publishes to it.
    class Nsq < Base
      def initialize(*)
        super
        cable = @server.config.cable || {}
        config = Pushgate.config.dup
        url = cable[:url] || cable["url"]
        topic = cable[:topic] || cable["topic"]
        prefix = (cable[:channel_prefix] || cable["channel_prefix"]).to_s
        config.nsqd_http_address = url if url
        config.topic = topic if topic
        @channel_prefix = prefix.empty? ? nil : prefix
        @publisher = Pushgate::Publisher.new(config)
      end

      # ActionCable hands over the payload already JSON-encoded. A broadcast
      # made with exclude_socket: (or to_others: under an X-Socket-ID) names
      # the connection the gateway skips.
      def broadcast(channel, payload)
        envelope = { "channel" => prefixed(channel.to_s), "data" => JSON.parse(payload) }
        exclude = Pushgate::Cable.current_exclusion
        envelope["exclude"] = exclude if exclude
        @publisher.publish(envelope)
      end

      def subscribe(*)
        raise NotImplementedError, "the nsq adapter only broadcasts: clients subscribe through the pushgate gateway"
      end

      def unsubscribe(*)
        raise NotImplementedError, "the nsq adapter only broadcasts: clients subscribe through the pushgate gateway"
      end

      def shutdown; end

      private

      def prefixed(channel)
        @channel_prefix.nil? || channel.start_with?("#") ? channel : "#{@channel_prefix}:#{channel}"
      end
    end
  end
end
